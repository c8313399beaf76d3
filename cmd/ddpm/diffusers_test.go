package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/internal/fixture"
)

// sample, info and eval read diffusers folders; export writes one that
// sample reads back; bad folders get one line.
func TestDiffusersFolders(t *testing.T) {
	fx := fixture.Diffusers(t)
	out := t.TempDir()
	for _, name := range []string{"unet-ddpm", "unet-ddpm-legacy"} {
		code, stdout, errOut := ddpm(t, "sample", "--model", filepath.Join(fx, name), "--n", "2", "--steps", "3", "-q",
			"--out", filepath.Join(out, name+".png"), "--device", "cpu")
		if code != 0 || !strings.Contains(stdout, "wrote") {
			t.Errorf("sample --model %s: exit %d\n%s%s", name, code, stdout, errOut)
		}
	}
	if code, stdout, errOut := ddpm(t, "info", "--model", filepath.Join(fx, "unet-classcond")); code != 0 || !strings.Contains(stdout, "classes       4") {
		t.Errorf("info --model: exit %d\n%s%s", code, stdout, errOut)
	}
	if code, _, errOut := ddpm(t, "sample", "--model", filepath.Join(fx, "unet-classcond"), "--n", "1", "--out", filepath.Join(out, "c.png")); code == 0 || !strings.Contains(errOut, "no null label") {
		t.Errorf("unconditional samples of a model without a null label: exit %d, %s", code, errOut)
	}
	if code, _, errOut := ddpm(t, "sample", "--model", filepath.Join(fx, "ddpm-cifar10-32"), "--n", "1", "--out", filepath.Join(out, "x.png")); code == 0 || !strings.Contains(errOut, "diffusion_pytorch_model") {
		t.Errorf("a folder without weights: exit %d, %s", code, errOut)
	}

	run := tinyRun(t)
	exported := filepath.Join(t.TempDir(), "exported")
	if code, stdout, errOut := ddpm(t, "export", "--run", run, "--out", exported); code != 0 || !strings.Contains(stdout, "wrote") {
		t.Fatalf("export: exit %d\n%s%s", code, stdout, errOut)
	}
	for _, f := range []string{"model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors", "scheduler/scheduler_config.json"} {
		if _, err := os.Stat(filepath.Join(exported, f)); err != nil {
			t.Errorf("export wrote no %s", f)
		}
	}
	if code, _, errOut := ddpm(t, "sample", "--model", exported, "--n", "2", "--steps", "3", "-q", "--out", filepath.Join(out, "e.png")); code != 0 {
		t.Errorf("sample --model of an export: exit %d, %s", code, errOut)
	}
	if code, _, errOut := ddpm(t, "export", "--run", run, "--out", exported); code == 0 || !strings.Contains(errOut, "not empty") {
		t.Errorf("export over a folder: exit %d, %s", code, errOut)
	}
}
