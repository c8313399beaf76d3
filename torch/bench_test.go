package torch

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/ddpm-go/ddpm/internal/benchcmp"
	"github.com/ddpm-go/ddpm/internal/pyref"
)

// BenchmarkCallOverhead is the cost of crossing into the shim. "cgo" is the
// bare round trip (a query that does no tensor work); "add" is a whole tiny
// operation as a model makes it: a 1-element addition through a Scope,
// which also creates and frees the result's handle.
func BenchmarkCallOverhead(b *testing.B) {
	b.Run("cgo", func(b *testing.B) {
		for b.Loop() {
			NumThreads()
		}
	})
	b.Run("add", func(b *testing.B) {
		s := NewScope(NoGrad)
		defer s.Close()
		x, y := s.FromFloat32s([]float32{1}, 1), s.FromFloat32s([]float32{2}, 1)
		for b.Loop() {
			s.Add(x, y).Close()
		}
		if err := s.Err(); err != nil {
			b.Fatal(err)
		}
	})
}

// compareScript is the PyTorch side of the comparisons below, started as
// "script THREADS": "add K" makes K additions of 1-element tensors under
// no_grad; "block K" runs K forward and backward passes of the block of
// BenchmarkBlockVsPyTorch.
const compareScript = benchcmp.Serve + `
import torch.nn.functional as F

threads = int(sys.argv[1])
torch.set_num_threads(threads)
gen = torch.Generator().manual_seed(0)

a, b = torch.ones(1), torch.full((1,), 2.0)

def add(k):
    k = int(k)
    with torch.no_grad():
        for _ in range(k):
            torch.add(a, b)
    return k

x = torch.randn(16, 64, 32, 32, generator=gen).requires_grad_()
w = (torch.randn(64, 64, 3, 3, generator=gen) * 0.05).requires_grad_()
bias = torch.zeros(64).requires_grad_()
gw, gb = torch.ones(64).requires_grad_(), torch.zeros(64).requires_grad_()
params = [x, w, bias, gw, gb]

def block(k):
    k = int(k)
    for _ in range(k):
        y = F.silu(F.group_norm(F.conv2d(x, w, bias, padding=1), 8, gw, gb, 1e-5))
        y.sum().backward()
        for p in params:
            p.grad = None
    return k

add(1000)
block(1)
serve({"add": add, "block": block}, threads)
`

// startCompare starts compareScript on this process's intra-op threads.
func startCompare(b *testing.B) *benchcmp.Reference {
	b.Helper()
	py := pyref.Python(b)
	dir := b.TempDir()
	script := filepath.Join(dir, "compare.py")
	if err := os.WriteFile(script, []byte(compareScript), 0o644); err != nil {
		b.Fatal(err)
	}
	threads := NumThreads()
	return benchcmp.Start(b, py, dir, script, threads, strconv.Itoa(threads))
}

// BenchmarkTinyOpVsPyTorch compares the per-operation overhead: 20,000
// additions of 1-element tensors per round, from Go (through a Scope, each
// result freed at once) and from Python (torch.add under no_grad).
func BenchmarkTinyOpVsPyTorch(b *testing.B) {
	const ops, rounds = 20000, 5
	ref := startCompare(b)
	s := NewScope(NoGrad)
	defer s.Close()
	x, y := s.FromFloat32s([]float32{1}, 1), s.FromFloat32s([]float32{2}, 1)
	var goCosts, torchCosts []benchcmp.Cost
	for range max(b.N, rounds) {
		goCosts = append(goCosts, benchcmp.Measure(b, ops, func() {
			for range ops {
				s.Add(x, y).Close()
			}
		}))
		torchCosts = append(torchCosts, ref.Run(b, "add "+strconv.Itoa(ops)))
	}
	if err := s.Err(); err != nil {
		b.Fatal(err)
	}
	benchcmp.Report(b, 1, "ops", goCosts, torchCosts)
}

// BenchmarkBlockVsPyTorch compares a U-Net building block, forward and
// backward: conv2d 64->64 (3x3, padding 1) + group_norm (8 groups) + SiLU on
// a (16, 64, 32, 32) float32 input that requires grad, the sum as the loss,
// gradients of the input and all four parameters, set to none after each
// pass. Five passes per round.
func BenchmarkBlockVsPyTorch(b *testing.B) {
	const passes, rounds, batch = 5, 5, 16
	ref := startCompare(b)
	gen := opGen(b, 0)
	in := NewScope(NoGrad)
	defer in.Close()
	x := in.Randn([]int64{batch, 64, 32, 32}, Float32, CPU, gen)
	w := in.MulScalar(in.Randn([]int64{64, 64, 3, 3}, Float32, CPU, gen), 0.05)
	bias := in.Zeros([]int64{64}, Float32, CPU)
	gw, gb := in.Ones([]int64{64}, Float32, CPU), in.Zeros([]int64{64}, Float32, CPU)
	params := []*Tensor{x, w, bias, gw, gb}
	if err := in.Err(); err != nil {
		b.Fatal(err)
	}
	for _, p := range params {
		if err := p.SetRequiresGrad(true); err != nil {
			b.Fatal(err)
		}
	}
	pass := func() {
		s := NewScope(Grad)
		y := s.SiLU(s.GroupNorm(s.Conv2d(x, w, bias, Conv2dOptions{Padding: [2]int64{1, 1}}), 8, gw, gb, 1e-5))
		s.Backward(s.Sum(y, nil, false))
		err := s.Err()
		s.Close()
		if err != nil {
			b.Fatal(err)
		}
		for _, p := range params {
			if err := p.ZeroGrad(); err != nil {
				b.Fatal(err)
			}
		}
	}
	pass() // warm-up, as on the PyTorch side
	var goCosts, torchCosts []benchcmp.Cost
	for range max(b.N, rounds) {
		goCosts = append(goCosts, benchcmp.Measure(b, passes, func() {
			for range passes {
				pass()
			}
		}))
		torchCosts = append(torchCosts, ref.Run(b, "block "+strconv.Itoa(passes)))
	}
	benchcmp.Report(b, batch, "images", goCosts, torchCosts)
}
