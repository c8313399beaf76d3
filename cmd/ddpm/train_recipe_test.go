package main

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/diffusion/features"
	"github.com/ddpm-go/ddpm/diffusion/optim"
	"github.com/ddpm-go/ddpm/torch"
)

func TestRecipeFor(t *testing.T) {
	cuda := recipeFor(torch.Device{Type: torch.DeviceCUDA})
	if cuda.steps != 20000 || cuda.lr != 2e-4 || cuda.decay != optim.ConstantLR || cuda.precision != diffusion.Float32 {
		t.Errorf("CUDA recipe %+v, want Ho et al.'s 2e-4 flat in float32", cuda)
	}
	cpu := recipeFor(torch.CPU)
	want := diffusion.BF16
	if diffusion.BF16.Check(torch.CPU) != nil {
		want = diffusion.Float32
	}
	if cpu.steps != 4000 || cpu.lr != 4e-4 || cpu.decay != optim.CosineLR || cpu.precision != want {
		t.Errorf("CPU recipe %+v, want 4000 steps, 4e-4 cosine, %s", cpu, want)
	}
}

// A new run states its plan and which defaults came from the device's
// recipe; flags given keep their values; --final-eval prints and logs the
// offline FID after the last step.
func TestTrainPlanAndFinalEval(t *testing.T) {
	t.Setenv(features.CacheDirEnv, t.TempDir())
	dataDir, runDir := t.TempDir(), filepath.Join(t.TempDir(), "run")
	writeIDX(t, dataDir, 48)
	code, out, errOut := ddpm(t, "train", "--preset", "tiny", "--data", dataDir, "--steps", "6", "--batch", "8", "--lr", "1e-3",
		"--sample-every", "0", "--sample-n", "2", "--log-every", "3", "--final-eval", "6", "--out", runDir, "--quiet")
	if code != 0 {
		t.Fatalf("train failed (%d): %s %s", code, out, errOut)
	}
	prec := recipeFor(torch.CPU).precision
	plan := "ddpm: plan: 6 steps of 8 images, " + string(prec) + ", learning rate 0.001 (cosine decay to 0), then fid-classifier on 6 samples; a CPU's defaults for --lr-decay, --precision\n"
	if !strings.Contains(out, plan) {
		t.Errorf("output lacks the plan %q:\n%s", plan, out)
	}
	if !strings.Contains(out, "ddpm: fid-classifier ") || !strings.Contains(out, "(6 samples of the EMA weights") {
		t.Errorf("output lacks the final fid-classifier:\n%s", out)
	}
	var cfg runConfig
	b, _ := os.ReadFile(filepath.Join(runDir, configFile))
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	if o := cfg.Train.Optimizer; o.LR != 1e-3 || o.Decay != optim.CosineLR || cfg.Train.Precision != prec {
		t.Errorf("stored optimizer %+v, precision %s", o, cfg.Train.Precision)
	}
	recs, err := readMetrics(filepath.Join(runDir, metricsFile))
	if err != nil || len(recs) == 0 {
		t.Fatalf("metrics log: %v", err)
	}
	last := recs[len(recs)-1]
	if fid, ok := last.Extra["fid_classifier"]; last.Step != 6 || !ok || !(fid >= 0) {
		t.Errorf("last metrics record %+v: want step 6 with fid_classifier", last)
	}
}

// The end is foretold once, 20 steps after the first, from the bar's pace;
// never for a run too short for that, nor with --quiet.
func TestEndNote(t *testing.T) {
	run := func(quiet bool, total int64) []int64 {
		bar := newProgress(io.Discard, quiet, "train", total)
		var end endNote
		var at []int64
		for step := int64(1); step <= total; step++ {
			bar.update(step, "")
			if end.line(bar, step) != "" {
				at = append(at, step)
			}
		}
		return at
	}
	if at := run(false, 100); len(at) != 1 || at[0] != 21 {
		t.Errorf("notes at steps %v, want one at 21 (20 steps after the first)", at)
	}
	if at := run(false, 10); len(at) != 0 {
		t.Errorf("a 10-step run foretold its end at steps %v", at)
	}
	if at := run(true, 100); len(at) != 0 {
		t.Errorf("a quiet run foretold its end at steps %v", at)
	}
	if got := roughDuration(3723e9); got != "1h2m" {
		t.Errorf("roughDuration = %q", got)
	}
}
