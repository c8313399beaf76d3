package torch

import (
	"errors"
	"math"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/ddpm-go/ddpm/internal/pyref"
)

// opGen returns a CPU generator seeded with seed, closed when the test (or
// benchmark) ends.
func opGen(t testing.TB, seed uint64) *Generator {
	t.Helper()
	g, err := NewGenerator(seed, CPU)
	if err != nil {
		t.Fatalf("NewGenerator(%d): %v", seed, err)
	}
	t.Cleanup(g.Close)
	return g
}

// opDraws takes one of each kind of draw from g, as float64s.
func opDraws(t *testing.T, s *Scope, g *Generator) [][]float64 {
	t.Helper()
	p := s.FromFloat64s([]float64{0.1, 0.5, 0.9, 0.5, 0.5, 0.5, 0.5, 0.5}, 8)
	return [][]float64{
		opValues(t, s.Randn([]int64{16}, Float64, CPU, g)),
		opValues(t, s.Randn([]int64{3}, Float32, CPU, g)),
		opValues(t, s.Rand([]int64{16}, Float64, CPU, g)),
		opValues(t, s.RandInt(0, 1000, []int64{16}, CPU, g)),
		opValues(t, s.Bernoulli(p, g)),
	}
}

// opSameBits reports whether a and b hold bit-identical values.
func opSameBits(a, b []float64) bool {
	return slices.EqualFunc(a, b, func(x, y float64) bool { return math.Float64bits(x) == math.Float64bits(y) })
}

func TestGeneratorSeeds(t *testing.T) {
	s := opScope(t, NoGrad)
	a := opDraws(t, s, opGen(t, 42))
	b := opDraws(t, s, opGen(t, 42))
	c := opDraws(t, s, opGen(t, 43))
	kinds := []string{"Randn float64", "Randn float32", "Rand", "RandInt", "Bernoulli"}
	for i, k := range kinds {
		if !opSameBits(a[i], b[i]) {
			t.Errorf("%s: seed 42 twice gave %v and %v", k, a[i], b[i])
		}
		if i != 4 && opSameBits(a[i], c[i]) { // 8 Bernoulli draws may coincide
			t.Errorf("%s: seeds 42 and 43 gave the same draws %v", k, a[i])
		}
	}
	// Successive draws of one generator differ.
	g := opGen(t, 42)
	x := opValues(t, s.Randn([]int64{16}, Float64, CPU, g))
	y := opValues(t, s.Randn([]int64{16}, Float64, CPU, g))
	if opSameBits(x, y) {
		t.Errorf("two successive draws are equal: %v", x)
	}
	if d := g.Device(); d != CPU {
		t.Errorf("Device = %v", d)
	}
}

func TestGeneratorState(t *testing.T) {
	s := opScope(t, NoGrad)
	g := opGen(t, 7)
	s.Randn([]int64{5}, Float64, CPU, g) // move away from the seed's state
	st, err := g.State()
	if err != nil {
		t.Fatalf("State: %v", err)
	}
	if len(st) == 0 {
		t.Fatalf("empty state")
	}
	if st2, err := g.State(); err != nil || !slices.Equal(st, st2) {
		t.Errorf("State twice without drawing differs (%v)", err)
	}
	first := opDraws(t, s, g)
	if err := g.SetState(st); err != nil {
		t.Fatalf("SetState: %v", err)
	}
	again := opDraws(t, s, g)
	for i := range first {
		if !opSameBits(first[i], again[i]) {
			t.Errorf("draw %d after SetState: %v, want %v", i, again[i], first[i])
		}
	}
	// The state carries over to a generator with another seed.
	other := opGen(t, 99)
	if err := other.SetState(st); err != nil {
		t.Fatalf("SetState on another generator: %v", err)
	}
	moved := opDraws(t, s, other)
	for i := range first {
		if !opSameBits(first[i], moved[i]) {
			t.Errorf("draw %d on a generator given the state: %v, want %v", i, moved[i], first[i])
		}
	}
	// A state taken right after seeding reproduces the seed's draws.
	fresh := opGen(t, 5)
	st0, err := fresh.State()
	if err != nil {
		t.Fatal(err)
	}
	want := opValues(t, s.Randn([]int64{4}, Float64, CPU, opGen(t, 5)))
	if err := g.SetState(st0); err != nil {
		t.Fatal(err)
	}
	if got := opValues(t, s.Randn([]int64{4}, Float64, CPU, g)); !opSameBits(got, want) {
		t.Errorf("after restoring a seed-5 state: %v, want %v", got, want)
	}
	// A state of the wrong size is refused without harm.
	if err := g.SetState([]byte{1, 2, 3}); err == nil {
		t.Errorf("SetState accepted a 3-byte state")
	}
	// A closed generator reports ErrClosed; closing twice is safe.
	c, err := NewGenerator(1, CPU)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	c.Close()
	if _, err := c.State(); !errors.Is(err, ErrClosed) {
		t.Errorf("State of a closed generator: %v, want ErrClosed", err)
	}
	if err := c.SetState(st); !errors.Is(err, ErrClosed) {
		t.Errorf("SetState of a closed generator: %v, want ErrClosed", err)
	}
	// Drawing from a closed generator fails instead of silently using
	// libtorch's global generator.
	ds := NewScope(NoGrad)
	defer ds.Close()
	if x := ds.Randn([]int64{2}, Float32, CPU, c); x != nil || !errors.Is(ds.Err(), ErrClosed) {
		t.Errorf("Randn with a closed generator: %v, %v", x, ds.Err())
	}
}

func TestRandomRandnMoments(t *testing.T) {
	const n = 200000
	s := opScope(t, NoGrad)
	x := s.Randn([]int64{n}, Float64, CPU, opGen(t, 3))
	if sh := x.Shape(); !slices.Equal(sh, []int64{n}) || x.DType() != Float64 {
		t.Fatalf("got %v", x)
	}
	v := opValues(t, x)
	var mean, sq float64
	for _, e := range v {
		mean += e
	}
	mean /= n
	for _, e := range v {
		sq += (e - mean) * (e - mean)
	}
	std := math.Sqrt(sq / (n - 1))
	if math.Abs(mean) > 0.01 {
		t.Errorf("mean %v, want 0 ± 0.01", mean)
	}
	if math.Abs(std-1) > 0.01 {
		t.Errorf("std %v, want 1 ± 0.01", std)
	}
	// The library's own reductions agree.
	if m, err := s.Mean(x, nil, false).Item(); err != nil || math.Abs(m-mean) > 1e-12 {
		t.Errorf("Mean = %v, %v; want %v", m, err, mean)
	}
	if sd, err := s.Std(x, nil, false).Item(); err != nil || math.Abs(sd-std) > 1e-12 {
		t.Errorf("Std = %v, %v; want %v", sd, err, std)
	}
	// The global generator (nil) works too, in float32.
	y := s.Randn([]int64{2, 3}, Float32, CPU, nil)
	if sh := y.Shape(); !slices.Equal(sh, []int64{2, 3}) || y.DType() != Float32 {
		t.Errorf("Randn with the global generator: %v", y)
	}
}

func TestRandomRand(t *testing.T) {
	const n = 200000
	for _, dt := range []DType{Float64, Float32} {
		t.Run(dt.String(), func(t *testing.T) {
			s := opScope(t, NoGrad)
			x := s.Rand([]int64{n}, dt, CPU, opGen(t, 4))
			if x.DType() != dt {
				t.Fatalf("dtype %v", x.DType())
			}
			lo, hi, mean := math.Inf(1), math.Inf(-1), 0.0
			for _, e := range opValues(t, x) {
				lo, hi = math.Min(lo, e), math.Max(hi, e)
				mean += e / n
			}
			if lo < 0 || hi >= 1 {
				t.Errorf("values in [%v, %v], want within [0, 1)", lo, hi)
			}
			if math.Abs(mean-0.5) > 0.01 {
				t.Errorf("mean %v, want 0.5 ± 0.01", mean)
			}
		})
	}
}

func TestRandomRandInt(t *testing.T) {
	s := opScope(t, NoGrad)
	const low, high, n = -3, 4, 10000
	x := s.RandInt(low, high, []int64{10, n / 10}, CPU, opGen(t, 5))
	if sh := x.Shape(); !slices.Equal(sh, []int64{10, n / 10}) || x.DType() != Int64 {
		t.Fatalf("got %v", x)
	}
	v, err := x.Int64s()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int64]int{}
	for _, e := range v {
		if e < low || e >= high {
			t.Fatalf("value %d outside [%d, %d)", e, low, high)
		}
		seen[e]++
	}
	for k := int64(low); k < high; k++ {
		// Each value is expected n/7 ≈ 1429 times.
		if c := seen[k]; c < 1200 || c > 1650 {
			t.Errorf("value %d drawn %d times of %d", k, c, n)
		}
	}
	// A one-value range gives that value.
	opCheck(t, s.RandInt(5, 6, []int64{4}, CPU, nil), Int64, []int64{4}, []float64{5, 5, 5, 5})
}

func TestRandomBernoulli(t *testing.T) {
	s := opScope(t, NoGrad)
	g := opGen(t, 6)
	opCheck(t, s.Bernoulli(s.FromFloat64s([]float64{0, 1, 0, 1}, 2, 2), g), Float64, []int64{2, 2}, []float64{0, 1, 0, 1})
	const n = 100000
	x := s.Bernoulli(s.Full([]int64{n}, 0.25, Float32, CPU), g)
	if x.DType() != Float32 {
		t.Fatalf("dtype %v", x.DType())
	}
	ones := 0.0
	for _, e := range opValues(t, x) {
		if e != 0 && e != 1 {
			t.Fatalf("Bernoulli drew %v", e)
		}
		ones += e
	}
	if frac := ones / n; math.Abs(frac-0.25) > 0.01 {
		t.Errorf("fraction of ones %v, want 0.25 ± 0.01", frac)
	}
}

// opPyRandomScript draws with PyTorch's own generator; each entry starts from
// a fresh generator seeded 1234 except "seq", which draws several kinds in
// turn from one.
const opPyRandomScript = `
import json, sys
import torch

def g():
    return torch.Generator().manual_seed(1234)

seq = g()
out = {
    "randn8": torch.randn(8, dtype=torch.float64, generator=g()).tolist(),
    "rand8": torch.rand(8, dtype=torch.float64, generator=g()).tolist(),
    "randint8": torch.randint(0, 1000, (8,), generator=g()).tolist(),
    "randn100_f32": torch.randn(100, dtype=torch.float32, generator=g()).tolist(),
    "rand100_f32": torch.rand(100, dtype=torch.float32, generator=g()).tolist(),
    "randn100": torch.randn(100, dtype=torch.float64, generator=g()).tolist(),
    "bernoulli16": torch.bernoulli(torch.full((16,), 0.5, dtype=torch.float64), generator=g()).tolist(),
    "seq": (torch.randn(8, dtype=torch.float64, generator=seq).tolist()
            + torch.rand(5, dtype=torch.float64, generator=seq).tolist()
            + [float(v) for v in torch.randint(-10, 10, (5,), generator=seq).tolist()]),
}
json.dump(out, sys.stdout)
`

func TestRandomAgainstPyTorch(t *testing.T) {
	var want map[string][]float64
	pyref.Run(t, opPyRandomScript, nil, &want)

	s := opScope(t, NoGrad)
	seq := opGen(t, 1234)
	got := map[string][]float64{
		"randn8":       opValues(t, s.Randn([]int64{8}, Float64, CPU, opGen(t, 1234))),
		"rand8":        opValues(t, s.Rand([]int64{8}, Float64, CPU, opGen(t, 1234))),
		"randint8":     opValues(t, s.RandInt(0, 1000, []int64{8}, CPU, opGen(t, 1234))),
		"randn100_f32": opValues(t, s.Randn([]int64{100}, Float32, CPU, opGen(t, 1234))),
		"rand100_f32":  opValues(t, s.Rand([]int64{100}, Float32, CPU, opGen(t, 1234))),
		"randn100":     opValues(t, s.Randn([]int64{100}, Float64, CPU, opGen(t, 1234))),
		"bernoulli16":  opValues(t, s.Bernoulli(s.Full([]int64{16}, 0.5, Float64, CPU), opGen(t, 1234))),
		"seq": slices.Concat(
			opValues(t, s.Randn([]int64{8}, Float64, CPU, seq)),
			opValues(t, s.Rand([]int64{5}, Float64, CPU, seq)),
			opValues(t, s.RandInt(-10, 10, []int64{5}, CPU, seq))),
	}
	names := make([]string, 0, len(got))
	for n := range got {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		t.Run(n, func(t *testing.T) {
			w, ok := want[n]
			if !ok {
				t.Fatalf("python gave no %q", n)
			}
			// Same libtorch, same algorithm: the draws must match bit for bit.
			if !opSameBits(got[n], w) {
				t.Errorf("got  %v\nwant %v", got[n], w)
			}
		})
	}
}

func TestGeneratorCUDAUnavailable(t *testing.T) {
	if CUDAAvailable() {
		t.Skip("a CUDA device is present; this checks the CPU-only failure path")
	}
	g, err := NewGenerator(1, CUDA(0))
	if err == nil {
		g.Close()
		t.Fatalf("NewGenerator on cuda:0 without CUDA succeeded")
	}
	if g != nil {
		t.Errorf("NewGenerator returned a generator with its error %v", err)
	}
	// Drawing on a CUDA device fails in the scope, too, without a crash.
	s := NewScope(NoGrad)
	defer s.Close()
	if x := s.Randn([]int64{2}, Float32, CUDA(0), nil); x != nil || s.Err() == nil {
		t.Errorf("Randn on cuda:0 without CUDA: %v, %v", x, s.Err())
	}
}

// A generator that is never closed is freed by the garbage-collector cleanup;
// one that is closed is not freed again.
func TestGeneratorCleanupBackstop(t *testing.T) {
	for range 3 { // let earlier tests' forgotten generators go first
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	before := gcFreedGenerators.Load()
	func() {
		g, err := NewGenerator(1, CPU)
		if err != nil {
			t.Fatal(err)
		}
		g.Close()
		for range 3 {
			if _, err := NewGenerator(2, CPU); err != nil { // dropped without Close
				t.Fatal(err)
			}
		}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for gcFreedGenerators.Load()-before < 3 && time.Now().Before(deadline) {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	// Give a wrongly registered cleanup of the closed generator time to run.
	runtime.GC()
	time.Sleep(20 * time.Millisecond)
	if got := gcFreedGenerators.Load() - before; got != 3 {
		t.Errorf("the collector freed %d generators, want the 3 that were not closed", got)
	}
}

// A closed generator gives its memory back: 50,000 of them, created and
// closed in turn, leave resident memory where it was (libtorch 1.13's
// Generator.clone kept every clone, 2.6 KiB of CPU generator each, 128 MiB
// here).
func TestGeneratorMemoryFreed(t *testing.T) {
	const n = 50000
	cycle := func(count int) {
		for i := range count {
			g, err := NewGenerator(uint64(i), CPU)
			if err != nil {
				t.Fatal(err)
			}
			g.Close()
		}
	}
	cycle(1000)
	before := residentBytes(t)
	cycle(n)
	grown := residentBytes(t) - before
	t.Logf("resident memory grew %d KiB over %d generators", grown>>10, n)
	if grown > 16<<20 {
		t.Errorf("resident memory grew %d MiB over %d generators created and closed: they leak", grown>>20, n)
	}
}
