package unet

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion/nn"
	"github.com/ddpm-go/ddpm/internal/pyref"
	"github.com/ddpm-go/ddpm/torch"
)

// referenceScript runs the same network written in PyTorch
// (testdata/unet_reference.py, see writeReference). It reads the config
// (JSON), the weights and the inputs (safetensors files), loads the weights
// with strict=True and prints the outputs as JSON.
const referenceScript = `
import json, sys
import torch
from unet_reference import UNet, read_safetensors

cfg = json.load(open(sys.argv[1]))
model = UNet(cfg).eval()
model.load_state_dict(read_safetensors(sys.argv[2]), strict=True)
inputs = read_safetensors(sys.argv[3])
result = {"num_params": sum(p.numel() for p in model.parameters())}
with torch.no_grad():
    result["out"] = model(inputs["x"], inputs["t"], inputs.get("labels")).flatten().tolist()
    if cfg["num_classes"] > 0:
        result["out_null"] = model(inputs["x"], inputs["t"], None).flatten().tolist()
print(json.dumps(result))
`

// referenceModule is the PyTorch U-Net that the reference scripts import.
const referenceModule = "unet_reference.py"

// writeReference writes a reference script and, next to it, the PyTorch
// U-Net it imports (testdata/unet_reference.py) into dir, and returns the
// script's path. Python puts the script's folder first on its module path,
// so the import finds the copy.
func writeReference(dir, name, script string) (string, error) {
	module, err := os.ReadFile(filepath.Join("testdata", referenceModule))
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, name)
	if err := errors.Join(
		os.WriteFile(filepath.Join(dir, referenceModule), module, 0o644),
		os.WriteFile(path, []byte(script), 0o644),
	); err != nil {
		return "", err
	}
	return path, nil
}

type referenceResult struct {
	NumParams int64     `json:"num_params"`
	Out       []float64 `json:"out"`
	OutNull   []float64 `json:"out_null"`
}

// The Go U-Net and the PyTorch reference compute the same function: the
// same (randomly perturbed) weights and inputs give outputs that agree to a
// relative error below 1e-5 in float32.
func TestParityWithPyTorch(t *testing.T) {
	py := pyref.Python(t)
	tiny := preset(t, "tiny")
	conditional := tiny.clone()
	conditional.NumClasses = 4
	twoHeads := Config{
		ImageSize: 16, InChannels: 3, OutChannels: 6, BaseChannels: 16,
		ChannelMult: []int{1, 2, 2}, NumResBlocks: 2, AttentionResolutions: []int{8, 4},
		NumHeads: 2, Dropout: 0.1, NormGroups: 4, TimeEmbedDim: 48, NumClasses: 2,
	}
	cases := []struct {
		name string
		cfg  Config
	}{
		{"tiny unconditional", tiny},
		{"tiny class-conditional", conditional},
		{"two heads", twoHeads},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			u := newModel(t, tc.cfg, uint64(10+i))
			gen := newGen(t, uint64(20+i))
			perturb(t, u, gen, 0.05)

			s := torch.NewScope(torch.NoGrad)
			defer s.Close()
			x, tt, labels := randomInputs(s, u.Config(), 3, gen)
			inputs := map[string]*torch.Tensor{"x": x, "t": tt}
			if labels != nil {
				// Make sure the null label is among them.
				labels = s.Cat([]*torch.Tensor{s.Narrow(labels, 0, 0, 2), s.FromInt64s([]int64{int64(tc.cfg.NumClasses)}, 1)}, 0)
				inputs["labels"] = labels
			}
			out := u.Forward(s, x, tt, labels)
			var outNull *torch.Tensor
			if labels != nil {
				outNull = u.Forward(s, x, tt, nil)
			}
			if err := s.Err(); err != nil {
				t.Fatal(err)
			}

			cfgJSON, err := json.Marshal(u.Config())
			if err != nil {
				t.Fatal(err)
			}
			paths := map[string]string{}
			for _, name := range []string{"config.json", "weights.safetensors", "inputs.safetensors"} {
				paths[name] = filepath.Join(dir, name)
			}
			script, err := writeReference(dir, "script.py", referenceScript)
			if err != nil {
				t.Fatal(err)
			}
			if err := errors.Join(
				os.WriteFile(paths["config.json"], cfgJSON, 0o644),
				torch.SaveSafetensors(paths["weights.safetensors"], nn.StateDict(u.Params()), nil),
				torch.SaveSafetensors(paths["inputs.safetensors"], inputs, nil),
			); err != nil {
				t.Fatal(err)
			}
			ref := runReference(t, py, script, paths["config.json"], paths["weights.safetensors"], paths["inputs.safetensors"])

			if want := nn.NumParams(u.Params()); ref.NumParams != want {
				t.Errorf("PyTorch model has %d parameters, Go model %d", ref.NumParams, want)
			}
			compare := func(what string, got *torch.Tensor, want []float64) {
				g := floats(t, got)
				if len(g) != len(want) {
					t.Fatalf("%s: %d values from Go, %d from PyTorch", what, len(g), len(want))
				}
				r := relErr(g, want)
				t.Logf("%s: relative error %.2g over %d values", what, r, len(g))
				if !(r < 1e-5) {
					t.Errorf("%s: relative error %g, want < 1e-5", what, r)
				}
			}
			compare("output", out, ref.Out)
			if outNull != nil {
				compare("output with nil labels", outNull, ref.OutNull)
			}
		})
	}
}

func runReference(t *testing.T, py string, args ...string) referenceResult {
	t.Helper()
	cmd := exec.Command(py, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("PyTorch reference failed: %v\n%s", err, stderr.String())
	}
	var r referenceResult
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		t.Fatalf("PyTorch reference output: %v\n%s", err, truncate(stdout.String(), 500))
	}
	return r
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return fmt.Sprintf("%s... (%d bytes)", s[:n], len(s))
}
