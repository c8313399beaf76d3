package main

import (
	"encoding/json"
	"math"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion/unet"
	"github.com/ddpm-go/ddpm/torch"
)

// benchJSON runs bench --json with args and decodes what it prints.
func benchJSON(t *testing.T, args ...string) benchResult {
	t.Helper()
	code, out, errOut := ddpm(t, append([]string{"bench", "--json"}, args...)...)
	if code != 0 {
		t.Fatalf("bench failed (%d): %s", code, errOut)
	}
	var r benchResult
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("%v: %q", err, out)
	}
	return r
}

// bench --profile times libtorch's operators in both steps: the denoising
// step calls aten::conv2d or one of the shim's kernels
// (ddpm::winograd_conv, ddpm::pointwise_conv, ddpm::narrow_conv,
// ddpm::im2col_conv) once per
// convolution of the model, and the
// training step runs backward functions too. Without --profile there is no
// profile.
func TestBenchProfile(t *testing.T) {
	r := benchJSON(t, "--preset", "tiny", "--batch", "2", "--iters", "2", "--warmup", "0", "--profile")
	convs := tinyConvs(t)
	if got := sampleConvs(r); got != float64(convs) {
		t.Errorf("denoising step: %g convolutions a step, want %d (the model's)", got, convs)
	}
	backward := false
	for _, row := range r.TrainProfile {
		backward = backward || strings.HasSuffix(row.Name, "Backward0") || strings.HasSuffix(row.Name, "_backward")
		if !(row.SelfMS >= 0 && row.SelfMS <= row.TotalMS && row.Calls > 0) {
			t.Errorf("training step row %+v", row)
		}
	}
	if !backward {
		t.Errorf("training step profile has no backward operator: %+v", r.TrainProfile)
	}

	code, out, errOut := ddpm(t, "bench", "--preset", "tiny", "--batch", "2", "--iters", "1", "--warmup", "0", "--profile")
	if code != 0 || !strings.Contains(out, "training step: ") || !strings.Contains(out, "denoising step: ") ||
		!strings.Contains(out, "aten::") || !strings.Contains(out, "other operators") {
		t.Errorf("bench --profile: exit %d, stdout %q, stderr %q; want two tables of operators", code, out, errOut)
	}
	code, out, _ = ddpm(t, "bench", "--preset", "tiny", "--batch", "2", "--iters", "1", "--warmup", "0", "--json")
	if code != 0 || strings.Contains(out, "profile") {
		t.Errorf("bench without --profile: exit %d, %q; want no profile", code, out)
	}
}

// tinyConvs is the number of convolutions of the tiny preset's U-Net.
func tinyConvs(t *testing.T) int {
	t.Helper()
	cfg, _ := unet.Preset("tiny")
	model, err := unet.New(cfg, torch.CPU, torch.Float32, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer model.Close()
	convs := 0
	for _, p := range model.Params() {
		if len(p.T.Shape()) == 4 {
			convs++
		}
	}
	return convs
}

// sampleConvs is the convolutions of a denoising step in r's profile:
// libtorch's and the shim's kernels' calls.
func sampleConvs(r benchResult) float64 {
	return sampleCalls(r, "aten::conv2d") + sampleCalls(r, "ddpm::winograd_conv") + sampleCalls(r, "ddpm::pointwise_conv") +
		sampleCalls(r, "ddpm::narrow_conv") + sampleCalls(r, "ddpm::im2col_conv")
}

// sampleCalls is the calls a denoising step of op in r's profile.
func sampleCalls(r benchResult, op string) float64 {
	for _, row := range r.SampleProfile {
		if row.Name == op {
			return row.Calls
		}
	}
	return 0
}

// bench --workers runs the denoising step in that many goroutines at once:
// a step runs each worker's forward, and the images/s are theirs together.
func TestBenchWorkers(t *testing.T) {
	r := benchJSON(t, "--preset", "tiny", "--batch", "2", "--iters", "2", "--warmup", "1", "--workers", "3", "--profile")
	if got, want := sampleConvs(r), float64(3*tinyConvs(t)); got != want {
		t.Errorf("denoising step of 3 workers: %g convolutions, want %g", got, want)
	}
	if want := 3 * 2 / r.SampleStepS; r.Workers != 3 || math.Abs(r.SampleImagesPerS-want) > 1e-9*want || !(r.GEMMGFLOPS > 0) {
		t.Errorf("workers %d, %g images/s (want %g), GEMM %g GFLOP/s", r.Workers, r.SampleImagesPerS, want, r.GEMMGFLOPS)
	}
	for _, workers := range []string{"0", "100000"} {
		if code, _, errOut := ddpm(t, "bench", "--workers", workers); code != 1 || strings.Count(errOut, "\n") != 1 {
			t.Errorf("--workers %s: exit %d, %q; want a one-line error", workers, code, errOut)
		}
	}
}
