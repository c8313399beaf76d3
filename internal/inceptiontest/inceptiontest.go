// Package inceptiontest makes a tiny TorchScript stand-in for the
// Inception network of FID (inception-2015-12-05.pt) for tests: the same
// methods and calling conventions (forward(img, return_features=False),
// a "layers" body fed 299×299 images normalised as (x − 128)/128, an
// "output" linear layer to 1008 classes), with a cheap body of any feature
// width. It needs Python with PyTorch; tests are skipped without it.
package inceptiontest

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/ddpm-go/ddpm/internal/pyref"
)

// source scripts the stand-in with sys.argv[2] features, saves it to
// sys.argv[1], and prints as JSON, for a fixed batch of gray images in
// [-1, 1], what StyleGAN's metrics would compute with it: the features,
// the class probabilities without the output bias, and the bias.
const source = `
import json, sys
import torch
import torch.nn.functional as F
from torch import nn

dim = int(sys.argv[2])

class StandIn(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(3, 8, 13, stride=13), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(8, dim, 1))
        self.output = nn.Linear(dim, 1008)

    def forward(self, img, return_features: bool = False):
        b, c, h, w = img.shape
        x = img.to(torch.float32)
        theta = torch.eye(2, 3)
        theta[0, 2] += theta[0, 0] / w - theta[0, 0] / 299
        theta[1, 2] += theta[1, 1] / h - theta[1, 1] / 299
        theta = theta.unsqueeze(0).repeat([b, 1, 1])
        grid = F.affine_grid(theta, [b, c, 299, 299], align_corners=False)
        x = F.grid_sample(x, grid, mode='bilinear', padding_mode='border', align_corners=False)
        x = (x - 128) / 128
        features = self.layers.forward(x).reshape((b, -1))
        if return_features:
            return features
        return F.softmax(self.output(features), dim=1)

torch.manual_seed(7)
m = torch.jit.script(StandIn().eval())
m.save(sys.argv[1])
x = torch.sin(torch.arange(2 * 16 * 16, dtype=torch.float32) * 0.61).reshape(2, 1, 16, 16)
img = (x * 127.5 + 128).clamp(0, 255).to(torch.uint8).repeat([1, 3, 1, 1])
with torch.no_grad():
    f = m(img, return_features=True)
    p = F.softmax(F.linear(f, m.output.weight), dim=1)
json.dump({"input": x.flatten().tolist(), "features": f.flatten().tolist(),
           "probs": p.flatten().tolist(), "bias": m.output.bias.tolist()}, sys.stdout)
`

// Fixture is a stand-in file and PyTorch's values for a fixed input.
type Fixture struct {
	Path     string    `json:"-"` // the TorchScript file
	Dim      int       `json:"-"`
	Input    []float32 `json:"input"`    // 2 gray 16×16 images in [-1, 1]
	Features []float64 `json:"features"` // 2×Dim, as StyleGAN computes them
	Probs    []float64 `json:"probs"`    // 2×1008, without the output bias
	Bias     []float64 `json:"bias"`     // the output layer's bias
}

var cache struct {
	sync.Mutex
	files map[int][]byte
	fix   map[int]Fixture
}

// Write saves a stand-in with dim features into a new temporary folder of
// t and returns it with PyTorch's values. Python runs once per dim and test
// binary.
func Write(t testing.TB, dim int) Fixture {
	t.Helper()
	py := pyref.Python(t)
	cache.Lock()
	defer cache.Unlock()
	if cache.files == nil {
		cache.files, cache.fix = map[int][]byte{}, map[int]Fixture{}
	}
	if _, ok := cache.files[dim]; !ok {
		file, fix, err := build(py, dim)
		if err != nil {
			t.Fatal(err)
		}
		cache.files[dim], cache.fix[dim] = file, fix
	}
	fix := cache.fix[dim]
	fix.Dim = dim
	fix.Path = filepath.Join(t.TempDir(), "inception-2015-12-05.pt")
	if err := os.WriteFile(fix.Path, cache.files[dim], 0o644); err != nil {
		t.Fatal(err)
	}
	return fix
}

func build(py string, dim int) ([]byte, Fixture, error) {
	var fix Fixture
	dir, err := os.MkdirTemp("", "ddpm-inception-standin-")
	if err != nil {
		return nil, fix, err
	}
	defer os.RemoveAll(dir)
	// torch.jit.script reads the class's source, so it must be a file.
	src := filepath.Join(dir, "standin.py")
	if err := os.WriteFile(src, []byte(source), 0o644); err != nil {
		return nil, fix, err
	}
	path := filepath.Join(dir, "standin.pt")
	cmd := exec.Command(py, src, path, strconv.Itoa(dim))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fix, fmt.Errorf("scripting the Inception stand-in: %v\n%s", err, stderr.String())
	}
	if err := json.Unmarshal(out, &fix); err != nil {
		return nil, fix, fmt.Errorf("stand-in output: %v\n%s", err, out)
	}
	file, err := os.ReadFile(path)
	return file, fix, err
}
