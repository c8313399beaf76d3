package main

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion/unet"
	"github.com/ddpm-go/ddpm/torch"
)

// --precision bf16 trains the tiny U-Net (GroupNorm, attention) on the CPU.
func TestTrainBF16(t *testing.T) {
	if !torch.CPUHasBF16() {
		t.Skip("this CPU has no bfloat16 instructions")
	}
	tinyRun(t, "--precision", "bf16")
}

// --precision bf16 samples and evaluates from a run; a precision the device
// cannot run is one line.
func TestSampleBF16(t *testing.T) {
	if !torch.CPUHasBF16() {
		t.Skip("this CPU has no bfloat16 instructions")
	}
	run := tinyRun(t)
	out := filepath.Join(t.TempDir(), "grid.png")
	if code, so, se := ddpm(t, "sample", "--run", run, "--n", "4", "--steps", "5", "--precision", "bf16", "--out", out, "-q"); code != 0 {
		t.Fatalf("sample --precision bf16 failed (%d): %s %s", code, so, se)
	}
	if _, err := os.Stat(out); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"fp16", "fp8"} {
		code, _, se := ddpm(t, "sample", "--run", run, "--n", "4", "--precision", bad, "--device", "cpu", "--out", out, "-q")
		if code == 0 || strings.Count(strings.TrimSpace(se), "\n") != 0 || !strings.Contains(se, "precision") {
			t.Errorf("--precision %s: exit %d, stderr %q; want one line naming the precision", bad, code, se)
		}
	}
}

// bench --precision bf16 reports its rates: GFLOP/s from the preset's FLOP
// count and the step times, and both GEMM peaks.
func TestBenchBF16(t *testing.T) {
	if !torch.CPUHasBF16() {
		t.Skip("this CPU has no bfloat16 instructions")
	}
	r := benchJSON(t, "--preset", "tiny", "--batch", "2", "--iters", "1", "--warmup", "0", "--precision", "bf16")
	cfg, _ := unet.Preset("tiny")
	flops := float64(cfg.FLOPs()) * 2
	near := func(a, b float64) bool { return math.Abs(a-b) <= 1e-9*b }
	if r.Precision != "bf16" || !near(r.TrainGFLOPS, 3*flops/r.TrainStepS/1e9) || !near(r.SampleGFLOPS, flops/r.SampleStepS/1e9) ||
		!(r.GEMMGFLOPS > 0) || !(r.LowGEMMGFLOPS > 0) {
		t.Errorf("bench result %+v", r)
	}
}
