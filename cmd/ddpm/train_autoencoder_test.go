package main

import (
	"encoding/json"
	"image/png"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion/autoencoder"
	"github.com/ddpm-go/ddpm/diffusion/checkpoint"
)

// train-autoencoder trains, checkpoints, logs metrics with the held-out
// PSNR, writes reconstruction grids, reports the PSNR and resumes; flags that would change a resumed run, bad values and a U-Net
// run directory are one error line each.
func TestTrainAutoencoder(t *testing.T) {
	dataDir, runDir := t.TempDir(), filepath.Join(t.TempDir(), "vae")
	writeIDX(t, dataDir, 48)
	common := []string{"--device", "cpu", "--threads", "1", "--quiet"}
	args := append([]string{"train-autoencoder", "--data", dataDir, "--image-size", "16", "--block-channels", "8,16",
		"--norm-groups", "4", "--latent-channels", "2", "--batch", "8", "--steps", "4", "--checkpoint-every", "2",
		"--eval-n", "8", "--eval-every", "2", "--log-every", "1", "--out", runDir}, common...)
	code, out, errOut := ddpm(t, args...)
	if code != 0 {
		t.Fatalf("exit %d: %s%s", code, out, errOut)
	}
	for _, want := range []string{"reconstruction PSNR", "on 4 images (held out of the training data), training weights",
		"EMA weights", "ckpt-00000004.safetensors"} {
		if !strings.Contains(out, want) {
			t.Errorf("output does not say %q:\n%s", want, out)
		}
	}
	ckpts, err := checkpoint.List(runDir)
	if err != nil || len(ckpts) != 2 {
		t.Fatalf("checkpoints %v, %v", ckpts, err)
	}
	meta, err := autoencoder.ReadCheckpointMeta(ckpts[1])
	if err != nil {
		t.Fatal(err)
	}
	if meta.Step != 4 || meta.Model.SampleSize != 16 || meta.Model.LatentChannels != 2 || meta.Data != dataDir {
		t.Errorf("checkpoint metadata %+v", meta)
	}

	if code, out, errOut := ddpm(t, "info", "--run", runDir); code != 0 || !strings.Contains(out, "1x16x16 images to 2x8x8 latents") ||
		!strings.Contains(out, "step          4 (EMA weights: true)") {
		t.Errorf("info: exit %d: %s%s", code, out, errOut)
	}

	// A grid of the 4 held-out 16x16 images over their reconstructions,
	// in 4 columns with a 2-pixel border.
	for _, step := range []string{"00000002", "00000004"} {
		f, err := os.Open(filepath.Join(runDir, samplesDir, "step-"+step+".png"))
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := png.DecodeConfig(f)
		f.Close()
		if err != nil || cfg.Width != 4*18+2 || cfg.Height != 2*18+2 {
			t.Errorf("grid of step %s: %dx%d, %v; want 74x38", step, cfg.Width, cfg.Height, err)
		}
	}

	// Cut the last record (step 4) short, as a crash during its write
	// would: resuming from step 4 keeps steps 1 to 3, drops the cut line
	// and goes on from there.
	checkLog := func(wantSteps []int64) {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(runDir, metricsFile))
		if err != nil {
			t.Fatal(err)
		}
		var steps []int64
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			var m autoencoderMetrics
			if err := json.Unmarshal([]byte(line), &m); err != nil {
				t.Fatalf("metrics line %q: %v", line, err)
			}
			if m.Loss <= 0 || m.ImagesPerSec <= 0 || m.LR <= 0 || (m.Step%2 == 0) != (m.EvalPSNR != nil) {
				t.Errorf("metrics record %s", line)
			}
			steps = append(steps, m.Step)
		}
		if !slices.Equal(steps, wantSteps) {
			t.Errorf("logged steps %v, want %v", steps, wantSteps)
		}
	}
	checkLog([]int64{1, 2, 3, 4})
	b, err := os.ReadFile(filepath.Join(runDir, metricsFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(runDir, metricsFile), b[:len(b)-10], 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = ddpm(t, append([]string{"train-autoencoder", "--resume", runDir, "--steps", "6", "--log-every", "1"}, common...)...)
	if code != 0 || !strings.Contains(out, "resumed from") || !strings.Contains(out, "step 4 of 6") {
		t.Fatalf("resume: exit %d: %s%s", code, out, errOut)
	}
	checkLog([]int64{1, 2, 3, 5, 6})

	// With a test split beside the data, the held-out images are its own.
	for _, name := range []string{"images", "labels"} {
		b, err := os.ReadFile(filepath.Join(dataDir, "train-"+name+"-idx"+map[string]string{"images": "3", "labels": "1"}[name]+"-ubyte.gz"))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dataDir, "t10k-"+name+"-idx"+map[string]string{"images": "3", "labels": "1"}[name]+"-ubyte.gz"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	code, out, errOut = ddpm(t, append([]string{"train-autoencoder", "--data", dataDir, "--image-size", "16", "--block-channels", "8,16",
		"--norm-groups", "4", "--latent-channels", "2", "--batch", "8", "--steps", "1", "--eval-n", "5",
		"--out", filepath.Join(t.TempDir(), "vae")}, common...)...)
	if code != 0 || !strings.Contains(out, "on 5 images (test split)") {
		t.Fatalf("with a test split: exit %d: %s%s", code, out, errOut)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--resume", runDir, "--lr", "1"}, "--lr cannot change a run on --resume"},
		{[]string{"--resume", runDir}, "the run is at step 6 of 6"},
		{[]string{"--data", dataDir, "--loss", "huber", "--out", t.TempDir()}, `unknown reconstruction loss "huber"`},
		{[]string{"--data", dataDir, "--block-channels", "8,12", "--out", t.TempDir()}, "is not divisible by norm_num_groups 8"},
		{[]string{"--data", dataDir, "--out", runDir}, "already holds"},
	} {
		code, out, errOut := ddpm(t, append(append([]string{"train-autoencoder"}, c.args...), common...)...)
		if code != 1 || !strings.Contains(errOut, c.want) || strings.Count(errOut, "\n") != 1 {
			t.Errorf("%v: exit %d, %q%q, want one line with %q", c.args, code, out, errOut, c.want)
		}
	}
}

// A resumed autoencoder run keeps its --checkpoint-every, --keep and
// --eval-n (which, without a test split, decides which images train), and
// refuses another --eval-n in one line.
func TestTrainAutoencoderResumeKeepsTheRunsSettings(t *testing.T) {
	dataDir, runDir := t.TempDir(), filepath.Join(t.TempDir(), "vae")
	writeIDX(t, dataDir, 48)
	common := []string{"--device", "cpu", "--threads", "1", "--quiet"}
	args := append([]string{"train-autoencoder", "--data", dataDir, "--image-size", "16", "--block-channels", "8,16",
		"--norm-groups", "4", "--latent-channels", "2", "--batch", "8", "--steps", "2", "--checkpoint-every", "3", "--keep", "1",
		"--eval-n", "2", "--eval-every", "0", "--out", runDir}, common...)
	if code, out, errOut := ddpm(t, args...); code != 0 {
		t.Fatalf("exit %d: %s%s", code, out, errOut)
	}
	code, out, errOut := ddpm(t, append([]string{"train-autoencoder", "--resume", runDir, "--steps", "4", "--eval-n", "3"}, common...)...)
	if code != 1 || !strings.Contains(errOut, "--eval-n 3 cannot change a run on --resume: the run's is 2") || strings.Count(errOut, "\n") != 1 {
		t.Errorf("resume --eval-n 3: exit %d, %q%q, want one line refusing it", code, out, errOut)
	}
	code, out, errOut = ddpm(t, append([]string{"train-autoencoder", "--resume", runDir, "--steps", "4"}, common...)...)
	if code != 0 || !strings.Contains(out, "on 2 images (held out of the training data)") {
		t.Fatalf("resume: exit %d: %s%s", code, out, errOut)
	}
	// Checkpoints at steps 3 and 4, of which --keep 1 keeps the last.
	ckpts, err := checkpoint.List(runDir)
	if err != nil || len(ckpts) != 1 || filepath.Base(ckpts[0]) != checkpoint.Name(4) {
		t.Fatalf("checkpoints %v (%v), want step 4 alone", ckpts, err)
	}
	meta, err := autoencoder.ReadCheckpointMeta(ckpts[0])
	if err != nil {
		t.Fatal(err)
	}
	if tc := meta.Train; tc.CheckpointEvery != 3 || tc.KeepCheckpoints != 1 || tc.HeldOut == nil || *tc.HeldOut != 2 || tc.Steps != 4 {
		t.Errorf("training configuration %+v", tc)
	}
}
