package main

import (
	"bytes"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion/checkpoint"
	"github.com/ddpm-go/ddpm/diffusion/diffusers"
)

// trainTinyAutoencoder trains a 16x16 -> 2x8x8 autoencoder two steps and
// returns its run directory.
func trainTinyAutoencoder(t *testing.T, dataDir string, latentChannels string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "vae")
	code, out, errOut := ddpm(t, "train-autoencoder", "--data", dataDir, "--image-size", "16", "--block-channels", "8,8",
		"--norm-groups", "4", "--latent-channels", latentChannels, "--batch", "8", "--steps", "2", "--eval-n", "8",
		"--out", dir, "--device", "cpu", "--threads", "1", "--quiet")
	if code != 0 {
		t.Fatalf("train-autoencoder: exit %d: %s%s", code, out, errOut)
	}
	return dir
}

// ddpm train --autoencoder trains the U-Net at the latent shape, records
// the autoencoder and its measured scaling factor, resumes with it, and
// ddpm sample decodes to images of the image size; a missing, corrupt or
// misshapen autoencoder is one line each.
func TestTrainLatent(t *testing.T) {
	dataDir := t.TempDir()
	writeIDX(t, dataDir, 48)
	aeRun := trainTinyAutoencoder(t, dataDir, "2")
	runDir := filepath.Join(t.TempDir(), "run")
	common := []string{"--device", "cpu", "--threads", "1", "--quiet"}
	code, out, errOut := ddpm(t, append([]string{"train", "--preset", "tiny", "--data", dataDir, "--autoencoder", aeRun,
		"--steps", "2", "--batch", "8", "--checkpoint-every", "2", "--sample-every", "2", "--sample-n", "4",
		"--eval-every", "2", "--eval-n", "0", "--out", runDir}, common...)...)
	if code != 0 {
		t.Fatalf("train: exit %d: %s%s", code, out, errOut)
	}
	if want := "encodes 1x16x16 images to 2x8x8 latents; scaling factor"; !strings.Contains(out, want) ||
		!strings.Contains(out, "1/std of the latents of 32 training images") {
		t.Errorf("output does not say %q with the measurement:\n%s", want, out)
	}
	ckpt := filepath.Join(runDir, checkpoint.Name(2))
	meta, err := checkpoint.ReadMeta(ckpt)
	if err != nil {
		t.Fatal(err)
	}
	a := meta.Autoencoder
	if a == nil || a.LatentChannels != 2 || a.LatentSize != 8 || a.ImageSize != 16 || a.ImageChannels != 1 ||
		!(a.ScalingFactor > 0) || a.Weights != checkpoint.EMA || a.Path != filepath.Join(aeRun, checkpoint.Name(2)) ||
		meta.Model.InChannels != 2 || meta.Model.ImageSize != 8 {
		t.Fatalf("checkpoint records %+v, model %+v", a, meta.Model)
	}
	grid, err := os.Open(filepath.Join(runDir, "samples", "step-00000002.png"))
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(grid)
	grid.Close()
	if err != nil || img.Bounds().Dx() != 2*18+2 {
		t.Errorf("sample grid %v, %v: want 2x2 images of 16 pixels", img.Bounds(), err)
	}

	code, out, errOut = ddpm(t, append([]string{"train", "--resume", runDir, "--steps", "3"}, common...)...)
	if code != 0 || !strings.Contains(out, "resumed from") {
		t.Fatalf("resume: exit %d: %s%s", code, out, errOut)
	}
	if m, err := checkpoint.ReadMeta(filepath.Join(runDir, checkpoint.Name(3))); err != nil || m.Autoencoder == nil || *m.Autoencoder != *a {
		t.Fatalf("resumed checkpoint records %+v (%v), want %+v", m.Autoencoder, err, a)
	}

	if code, out, _ := ddpm(t, "info", "--run", runDir); code != 0 || !strings.Contains(out, "image         1x16x16, decoded by the autoencoder") ||
		!strings.Contains(out, "latent        2x8x8 (scaling factor") {
		t.Errorf("info: %s", out)
	}
	outDir := t.TempDir()
	if code, out, errOut := ddpm(t, "sample", "--run", runDir, "--steps", "2", "--n", "2", "--out", "", "--out-dir", outDir, "--device", "cpu", "--quiet"); code != 0 {
		t.Fatalf("sample: exit %d: %s%s", code, out, errOut)
	}
	f, err := os.Open(filepath.Join(outDir, "000000.png"))
	if err != nil {
		entries, _ := os.ReadDir(outDir)
		t.Fatalf("%v (out-dir holds %v)", err, entries)
	}
	img, err = png.Decode(f)
	f.Close()
	if err != nil || img.Bounds().Dx() != 16 || img.Bounds().Dy() != 16 {
		t.Fatalf("sampled image %v, %v: want 16x16 (the image size, not the latent size 8)", img.Bounds(), err)
	}

	// Exported as a diffusers folder, the latent model carries its
	// autoencoder as vae/ with the run's scaling factor, samples the same
	// pixels as the run, and its vae/ alone is an AutoencoderKL folder that
	// train --autoencoder takes. The autoencoder run exports too.
	folder := filepath.Join(t.TempDir(), "latent-diffusers")
	if code, out, errOut := ddpm(t, "export", "--run", runDir, "--out", folder); code != 0 || !strings.Contains(out, "with its AutoencoderKL as vae/") {
		t.Fatalf("export: exit %d: %s%s", code, out, errOut)
	}
	vaeCfg, err := diffusers.ReadAutoencoderConfig(filepath.Join(folder, "vae", "config.json"))
	if err != nil || vaeCfg.ScalingFactor != a.ScalingFactor || vaeCfg.Shift() != 0 || vaeCfg.LatentChannels != 2 {
		t.Fatalf("vae/config.json: %+v, %v; want scaling factor %g", vaeCfg, err, a.ScalingFactor)
	}
	samplePNG := func(args ...string) []byte {
		t.Helper()
		path := filepath.Join(t.TempDir(), "x.png")
		args = append(append([]string{"sample"}, args...), "--sampler", "ddim", "--steps", "3", "--clip", "none", "--n", "4",
			"--seed", "5", "--out", path, "--device", "cpu", "--threads", "1", "--quiet")
		if code, out, errOut := ddpm(t, args...); code != 0 {
			t.Fatalf("%v: exit %d: %s%s", args, code, out, errOut)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if !bytes.Equal(samplePNG("--run", runDir), samplePNG("--model", folder)) {
		t.Error("the exported folder samples other pixels than its run")
	}
	if code, out, _ := ddpm(t, "info", "--model", folder); code != 0 || !strings.Contains(out, "image         1x16x16, decoded by the autoencoder "+filepath.Join(folder, "vae")) ||
		!strings.Contains(out, "latent        2x8x8") {
		t.Errorf("info --model of a latent folder: %s", out)
	}
	vaeFolder := filepath.Join(t.TempDir(), "vae-diffusers")
	if code, out, errOut := ddpm(t, "export", "--run", aeRun, "--out", vaeFolder); code != 0 || !strings.Contains(out, "diffusers AutoencoderKL") {
		t.Fatalf("export of the autoencoder: exit %d: %s%s", code, out, errOut)
	}
	for _, ae := range []string{vaeFolder, filepath.Join(folder, "vae")} {
		if code, out, errOut := ddpm(t, append([]string{"train", "--preset", "tiny", "--data", dataDir, "--autoencoder", ae, "--steps", "1",
			"--batch", "8", "--sample-every", "0", "--out", filepath.Join(t.TempDir(), "run")}, common...)...); code != 0 {
			t.Errorf("train --autoencoder %s: exit %d: %s%s", ae, code, out, errOut)
		}
	}

	// The autoencoder replaced by one of other latents, then corrupt, then gone.
	other := trainTinyAutoencoder(t, dataDir, "3")
	b, err := os.ReadFile(filepath.Join(other, checkpoint.Name(2)))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		apply func() error
		want  string
	}{
		{"latent shape", func() error { return os.WriteFile(a.Path, b, 0o644) }, "makes latents of 3 channels"},
		{"corrupt", func() error { return os.WriteFile(a.Path, []byte("garbage"), 0o644) }, "which does not load"},
		{"missing", func() error { return os.RemoveAll(aeRun) }, "which is missing: no " + a.Path},
	} {
		if err := c.apply(); err != nil {
			t.Fatal(err)
		}
		code, out, errOut := ddpm(t, "sample", "--checkpoint", ckpt, "--steps", "2", "--n", "1", "--out", filepath.Join(outDir, "x.png"), "--device", "cpu", "--quiet")
		if code != 1 || !strings.Contains(errOut, c.want) || strings.Count(errOut, "\n") != 1 {
			t.Errorf("%s: exit %d, %q%q, want one line with %q", c.name, code, out, errOut, c.want)
		}
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--autoencoder", ckpt}, "is a U-Net checkpoint (ddpm train), not an autoencoder checkpoint"},
		{[]string{"--autoencoder", other, "--channels", "3"}, "--channels 3, but the autoencoder"},
		{[]string{"--autoencoder", other, "--image-size", "18"}, "the U-Net at the latent shape 3x9x9"},
		{[]string{"--resume", runDir, "--autoencoder", other}, "--autoencoder cannot change a run on --resume"},
	} {
		args := append([]string{"train", "--preset", "tiny", "--data", dataDir, "--steps", "1"}, c.args...)
		if c.args[0] == "--resume" {
			args = append([]string{"train"}, c.args...)
		} else {
			args = append(args, "--out", filepath.Join(t.TempDir(), "run"))
		}
		code, out, errOut := ddpm(t, append(args, common...)...)
		if code != 1 || !strings.Contains(errOut, c.want) || strings.Count(errOut, "\n") != 1 {
			t.Errorf("%v: exit %d, %q%q, want one line with %q", c.args, code, out, errOut, c.want)
		}
	}
	// Under torchrun a latent run, new or resumed, is refused at once,
	// before any rank waits for the others.
	for k, v := range map[string]string{"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29999"} {
		t.Setenv(k, v)
	}
	for _, args := range [][]string{{"--resume", runDir, "--steps", "4"}, {"--preset", "tiny", "--data", dataDir, "--autoencoder", aeRun, "--out", filepath.Join(t.TempDir(), "run")}} {
		code, out, errOut := ddpm(t, append(append([]string{"train"}, args...), common...)...)
		if want := "data-parallel latent runs are not supported"; code != 1 || !strings.Contains(errOut, want) || strings.Count(errOut, "\n") != 1 {
			t.Errorf("%v under torchrun: exit %d, %q%q, want one line with %q", args, code, out, errOut, want)
		}
	}
}
