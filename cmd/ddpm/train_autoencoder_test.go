package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion/autoencoder"
	"github.com/ddpm-go/ddpm/diffusion/checkpoint"
)

// train-autoencoder trains, checkpoints, reports the held-out PSNR and
// resumes; flags that would change a resumed run, bad values and a U-Net
// run directory are one error line each.
func TestTrainAutoencoder(t *testing.T) {
	dataDir, runDir := t.TempDir(), filepath.Join(t.TempDir(), "vae")
	writeIDX(t, dataDir, 48)
	common := []string{"--device", "cpu", "--threads", "1", "--quiet"}
	args := append([]string{"train-autoencoder", "--data", dataDir, "--image-size", "16", "--block-channels", "8,16",
		"--norm-groups", "4", "--latent-channels", "2", "--batch", "8", "--steps", "4", "--checkpoint-every", "2",
		"--eval-n", "8", "--out", runDir}, common...)
	code, out, errOut := ddpm(t, args...)
	if code != 0 {
		t.Fatalf("exit %d: %s%s", code, out, errOut)
	}
	for _, want := range []string{"held-out reconstruction PSNR", "training weights", "EMA weights", "ckpt-00000004.safetensors"} {
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

	code, out, errOut = ddpm(t, append([]string{"train-autoencoder", "--resume", runDir, "--steps", "6"}, common...)...)
	if code != 0 || !strings.Contains(out, "resumed from") || !strings.Contains(out, "step 4 of 6") {
		t.Fatalf("resume: exit %d: %s%s", code, out, errOut)
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
