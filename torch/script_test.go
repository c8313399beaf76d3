package torch

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/ddpm-go/ddpm/internal/pyref"
)

// scriptModuleSource builds a small TorchScript module with a fixed seed,
// saves it to sys.argv[1] and prints, as JSON, a fixed input and the outputs
// of forward and of the exported methods for it.
const scriptModuleSource = `
import json, sys
from typing import List
import torch
from torch import nn

class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        f = self.embed(x)
        return f, self.fc(f)

    @torch.jit.export
    def embed(self, x):
        return self.pool(torch.relu(self.conv(x))).flatten(1)

    @torch.jit.export
    def pair(self, a, b) -> List[torch.Tensor]:
        return [a + b, a * b]

    @torch.jit.export
    def many(self, x) -> List[torch.Tensor]:
        return [x * float(i) for i in range(65)]

    @torch.jit.export
    def rank(self, x) -> int:
        return x.dim()

torch.manual_seed(1234)
m = torch.jit.script(Tiny().eval())
m.save(sys.argv[1])
x = torch.sin(torch.arange(2 * 3 * 6 * 5, dtype=torch.float32) * 0.37).reshape(2, 3, 6, 5) * 2
with torch.no_grad():
    feats, logits = m(x)
    emb = m.embed(x)
    fc = m.fc(feats)
json.dump({
    "input": x.flatten().tolist(),
    "features": feats.flatten().tolist(), "features_shape": list(feats.shape),
    "logits": logits.flatten().tolist(), "logits_shape": list(logits.shape),
    "embed": emb.flatten().tolist(),
    "fc": fc.flatten().tolist(),
}, sys.stdout)
`

type scriptFixture struct {
	Path          string    `json:"-"`
	Input         []float32 `json:"input"`
	Features      []float32 `json:"features"`
	FeaturesShape []int64   `json:"features_shape"`
	Logits        []float32 `json:"logits"`
	LogitsShape   []int64   `json:"logits_shape"`
	Embed         []float32 `json:"embed"`
	FC            []float32 `json:"fc"`
}

var inputShape = []int64{2, 3, 6, 5}

// scriptOnce runs Python once per test binary: the module file's bytes and
// the expected values are kept, and each test writes its own copy.
var scriptOnce struct {
	sync.Once
	file    []byte
	fixture scriptFixture
	err     error
}

// scriptModule writes the test module into the test's TempDir and returns
// its path with PyTorch's values for the fixed input.
func scriptModule(t *testing.T) scriptFixture {
	t.Helper()
	py := pyref.Python(t) // skips, or fails, every test without PyTorch
	scriptOnce.Do(func() {
		scriptOnce.file, scriptOnce.fixture, scriptOnce.err = runScriptModuleSource(py)
	})
	if scriptOnce.err != nil {
		t.Fatal(scriptOnce.err)
	}
	f := scriptOnce.fixture
	f.Path = filepath.Join(t.TempDir(), "tiny.pt")
	if err := os.WriteFile(f.Path, scriptOnce.file, 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

func runScriptModuleSource(py string) ([]byte, scriptFixture, error) {
	var f scriptFixture
	dir, err := os.MkdirTemp("", "ddpm-script-test-")
	if err != nil {
		return nil, f, err
	}
	defer os.RemoveAll(dir)
	// torch.jit.script reads the class's source, so it must come from a file.
	src := filepath.Join(dir, "tiny.py")
	if err := os.WriteFile(src, []byte(scriptModuleSource), 0o644); err != nil {
		return nil, f, err
	}
	path := filepath.Join(dir, "tiny.pt")
	cmd := exec.Command(py, src, path)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, f, fmt.Errorf("python: %v\n%s", err, stderr.String())
	}
	if err := json.Unmarshal(out, &f); err != nil {
		return nil, f, fmt.Errorf("python output: %v\n%s", err, out)
	}
	file, err := os.ReadFile(path)
	return file, f, err
}

func loadModule(t *testing.T, path string) *Module {
	t.Helper()
	m, err := LoadModule(path, CPU)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

func assertClose(t *testing.T, name string, got *Tensor, wantShape []int64, want []float32) {
	t.Helper()
	if got == nil {
		t.Fatalf("%s: nil tensor", name)
	}
	if wantShape != nil && !reflect.DeepEqual(got.Shape(), wantShape) {
		t.Errorf("%s: shape %v, want %v", name, got.Shape(), wantShape)
	}
	v, err := got.Float32s()
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if len(v) != len(want) {
		t.Fatalf("%s: %d values, want %d", name, len(v), len(want))
	}
	for i := range v {
		if d := math.Abs(float64(v[i] - want[i])); d > 1e-5 {
			t.Fatalf("%s[%d] = %v, want %v (diff %g)", name, i, v[i], want[i], d)
		}
	}
}

func TestModuleMatchesPyTorch(t *testing.T) {
	f := scriptModule(t)
	m := loadModule(t, f.Path)
	if m.Path() != f.Path {
		t.Errorf("Path() = %q", m.Path())
	}
	s := NewScope(NoGrad)
	defer s.Close()
	x := s.FromFloat32s(f.Input, inputShape...)

	outs := s.Forward(m, x)
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	if len(outs) != 2 {
		t.Fatalf("forward returned %d tensors, want 2", len(outs))
	}
	assertClose(t, "features", outs[0], f.FeaturesShape, f.Features)
	assertClose(t, "logits", outs[1], f.LogitsShape, f.Logits)

	emb := s.CallMethod(m, "embed", x)
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	if len(emb) != 1 {
		t.Fatalf("embed returned %d tensors, want 1", len(emb))
	}
	assertClose(t, "embed", emb[0], f.FeaturesShape, f.Embed)

	// A submodule's method, by path.
	fc := s.CallMethod(m, "fc.forward", outs[0])
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	assertClose(t, "fc.forward", fc[0], f.LogitsShape, f.FC)

	// A list result comes back in order.
	a := s.FromFloat32s([]float32{1, 2, 3}, 3)
	b := s.FromFloat32s([]float32{4, 5, 6}, 3)
	pair := s.CallMethod(m, "pair", a, b)
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	if len(pair) != 2 {
		t.Fatalf("pair returned %d tensors, want 2", len(pair))
	}
	assertClose(t, "pair[0]", pair[0], []int64{3}, []float32{5, 7, 9})
	assertClose(t, "pair[1]", pair[1], []int64{3}, []float32{4, 10, 18})
}

// The module is usable from many goroutines at once, and the same input
// gives the same output each time.
func TestModuleConcurrentCalls(t *testing.T) {
	f := scriptModule(t)
	m := loadModule(t, f.Path)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				s := NewScope(Inference)
				x := s.FromFloat32s(f.Input, inputShape...)
				outs := s.Forward(m, x)
				if err := s.Err(); err != nil {
					errs <- err
					s.Close()
					return
				}
				v, _ := outs[1].Float32s()
				for i := range v {
					if math.Abs(float64(v[i]-f.Logits[i])) > 1e-5 {
						errs <- errors.New("logits differ between concurrent calls")
						break
					}
				}
				s.Close()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestModuleLoadErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "no-such-model.pt")
	m, err := LoadModule(missing, CPU)
	if err == nil {
		m.Close()
		t.Fatal("loading a missing file succeeded")
	}
	if !strings.Contains(err.Error(), missing) {
		t.Errorf("error does not name the path: %v", err)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("error is not fs.ErrNotExist: %#v", err)
	}
	t.Logf("missing file: %v", err)

	junk := filepath.Join(dir, "junk.pt")
	data := make([]byte, 4096)
	for i := range data {
		data[i] = byte(i*7919 + i/13)
	}
	if err := os.WriteFile(junk, data, 0o644); err != nil {
		t.Fatal(err)
	}
	m, err = LoadModule(junk, CPU)
	if err == nil {
		m.Close()
		t.Fatal("loading random bytes succeeded")
	}
	if !strings.Contains(err.Error(), junk) {
		t.Errorf("error does not name the path: %v", err)
	}
	var te *Error
	if !errors.As(err, &te) {
		t.Errorf("error is not a *torch.Error: %#v", err)
	}
	t.Logf("not TorchScript: %v", err)

	// A zip archive that is not TorchScript (a plain torch.save file) is
	// refused too; PyTorch writes one.
	t.Run("torch.save file", func(t *testing.T) {
		py := pyref.Python(t)
		plain := filepath.Join(dir, "state.pt")
		cmd := exec.Command(py, "-c", "import sys, torch; torch.save({'w': torch.ones(2)}, sys.argv[1])", plain)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("python: %v\n%s", err, out)
		}
		m, err := LoadModule(plain, CPU)
		if err == nil {
			m.Close()
			t.Fatal("loading a torch.save state dict as a module succeeded")
		}
		t.Logf("state dict: %v", err)
	})
}

func TestModuleCallErrors(t *testing.T) {
	f := scriptModule(t)
	m := loadModule(t, f.Path)
	cases := []struct {
		name string
		call func(s *Scope) []*Tensor
		want string // a piece of the one-line message
	}{
		{"wrong shape", func(s *Scope) []*Tensor {
			return s.Forward(m, s.Ones([]int64{2, 3}, Float32, CPU))
		}, "conv2d"},
		{"wrong channels", func(s *Scope) []*Tensor {
			return s.Forward(m, s.Ones([]int64{1, 4, 6, 5}, Float32, CPU))
		}, "channels"},
		{"too few arguments", func(s *Scope) []*Tensor { return s.Forward(m) }, "forward"},
		{"too many arguments", func(s *Scope) []*Tensor {
			x := s.Ones([]int64{1, 3, 6, 5}, Float32, CPU)
			return s.Forward(m, x, x)
		}, "argument"},
		{"unknown method", func(s *Scope) []*Tensor {
			return s.CallMethod(m, "no_such_method", s.Ones([]int64{1, 3, 6, 5}, Float32, CPU))
		}, "no method 'no_such_method'"},
		{"unknown submodule", func(s *Scope) []*Tensor {
			return s.CallMethod(m, "head.forward", s.Ones([]int64{1, 8}, Float32, CPU))
		}, "no submodule 'head'"},
		{"empty method", func(s *Scope) []*Tensor { return s.CallMethod(m, "") }, "empty method name"},
		{"not a tensor result", func(s *Scope) []*Tensor {
			return s.CallMethod(m, "rank", s.Ones([]int64{1, 3, 6, 5}, Float32, CPU))
		}, "not a tensor"},
		{"too many results", func(s *Scope) []*Tensor {
			return s.CallMethod(m, "many", s.Ones([]int64{2}, Float32, CPU))
		}, "returned 65 tensors, room for 64"},
		{"closed argument", func(s *Scope) []*Tensor {
			x := s.Ones([]int64{1, 3, 6, 5}, Float32, CPU)
			x.Close()
			return s.Forward(m, x)
		}, "closed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			live := LiveTensors()
			s := NewScope(NoGrad)
			defer s.Close()
			outs := c.call(s)
			err := s.Err()
			if err == nil || outs != nil {
				t.Fatalf("got %v, %v; want an error", outs, err)
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") {
				t.Errorf("message is not one line: %q", msg)
			}
			if !strings.Contains(msg, c.want) {
				t.Errorf("message %q does not contain %q", msg, c.want)
			}
			t.Logf("%v", err)
			// A failed call makes no tensors beyond its inputs, and later
			// operations fail fast with the same error.
			if made := LiveTensors() - live; made > 1 || made > int64(s.Len()) {
				t.Errorf("%d live tensors, scope owns %d, after a failed call", made, s.Len())
			}
			if s.Forward(m, s.Ones([]int64{1, 3, 6, 5}, Float32, CPU)) != nil || s.Err() != err {
				t.Error("error is not sticky")
			}
		})
	}

	// A closed module is refused.
	m2 := loadModule(t, f.Path)
	m2.Close()
	m2.Close()
	s := NewScope(NoGrad)
	defer s.Close()
	if outs := s.Forward(m2, s.Ones([]int64{1, 3, 6, 5}, Float32, CPU)); outs != nil || s.Err() == nil ||
		!strings.Contains(s.Err().Error(), "closed module") {
		t.Errorf("closed module: %v, %v", outs, s.Err())
	}
	var nilModule *Module
	nilModule.Close()
}

// Forward calls in scopes free everything they made.
func TestModuleLeaksNothing(t *testing.T) {
	f := scriptModule(t)
	m := loadModule(t, f.Path)
	start := LiveTensors()
	for i := range 200 {
		mode := []Mode{Grad, NoGrad, Inference}[i%3]
		s := NewScope(mode)
		x := s.FromFloat32s(f.Input, inputShape...)
		outs := s.Forward(m, x)
		_ = s.CallMethod(m, "embed", x)
		if err := s.Err(); err != nil {
			t.Fatal(err)
		}
		if len(outs) != 2 {
			t.Fatalf("forward returned %d tensors", len(outs))
		}
		s.Close()
	}
	if got := LiveTensors(); got != start {
		t.Errorf("live tensors %d after 200 calls, want %d", got, start)
	}
}

// The scope's mode governs the call: inference and no-grad results do not
// require grad; grad mode records through the module's parameters.
func TestModuleModes(t *testing.T) {
	f := scriptModule(t)
	m := loadModule(t, f.Path)
	for _, c := range []struct {
		mode Mode
		grad bool
	}{{Inference, false}, {NoGrad, false}, {Grad, true}} {
		s := NewScope(c.mode)
		x := s.FromFloat32s(f.Input, inputShape...)
		outs := s.Forward(m, x)
		if err := s.Err(); err != nil {
			t.Fatal(err)
		}
		for i, o := range outs {
			meta, err := o.Meta()
			if err != nil {
				t.Fatal(err)
			}
			if meta.RequiresGrad != c.grad {
				t.Errorf("%s: output %d RequiresGrad = %v, want %v", c.mode, i, meta.RequiresGrad, c.grad)
			}
		}
		assertClose(t, c.mode.String()+" logits", outs[1], f.LogitsShape, f.Logits)
		if c.mode == Grad {
			// Gradients flow back to the input through the module.
			if err := x.SetRequiresGrad(true); err == nil {
				outs = s.Forward(m, x)
				s.Backward(s.Sum(outs[1], nil, false))
				if err := s.Err(); err != nil {
					t.Fatal(err)
				}
				gs := s.Grad(x)
				if gs == nil || !reflect.DeepEqual(gs.Shape(), inputShape) {
					t.Errorf("input gradient %v", gs)
				}
			}
		}
		s.Close()
	}
}
