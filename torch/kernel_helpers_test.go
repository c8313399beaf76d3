package torch

import (
	"math"
	"slices"
	"testing"
)

// errorL2 is ||got - want|| / ||scale|| (scale want for the relative L2
// error) and the largest |got - want|.
func errorL2(got, want, scale []float64) (rel, largest float64) {
	var d2, s2 float64
	for i := range want {
		d := math.Abs(got[i] - want[i])
		d2 += d * d
		s2 += scale[i] * scale[i]
		largest = math.Max(largest, d)
	}
	return math.Sqrt(d2 / s2), largest
}

// pad1 is the options of a 3x3 convolution that keeps the map's size.
var pad1 = Conv2dOptions{Padding: [2]int64{1, 1}}

// adopted moves y into s (out of the scope that made it).
func adopted(s *Scope, y *Tensor) *Tensor {
	s.Adopt(y)
	return y
}

// skipWithoutVectors skips the test where the shim's convolution kernels
// do not run.
func skipWithoutVectors(t *testing.T) {
	t.Helper()
	if !WinogradConvSupported() {
		t.Skip("the shim's vector kernels (Winograd, 1x1, narrow and im2col convolutions) need an x86-64 CPU with AVX-512 or AVX2")
	}
}

// vectorWidth is a vector width of the shim's kernels and the limit that
// chooses it (vectorISA).
type vectorWidth struct {
	name  string
	limit int
}

// vectorISAs are the kernels' vector widths this CPU runs, widest first;
// the test skips where there are none.
func vectorISAs(t *testing.T) []vectorWidth {
	skipWithoutVectors(t)
	all := []vectorWidth{{"avx512", vectorsAVX512}, {"avx2", vectorsAVX2}}
	widest := vectorISA(-1)
	for len(all) > 0 && all[0].limit > widest {
		all = all[1:]
	}
	return all
}

// kernelUse is a call that should (kernel) or should not run a shim kernel.
type kernelUse struct {
	name   string
	kernel bool
	call   func(s *Scope) *Tensor
}

// testKernelUse runs each call in a subtest and checks that the profile
// has op exactly when the call's kernel is true.
func testKernelUse(t *testing.T, op string, uses []kernelUse) {
	t.Helper()
	for _, u := range uses {
		t.Run(u.name, func(t *testing.T) {
			s := opScope(t, NoGrad)
			var y *Tensor
			stats := profileOf(t, func() { y = u.call(s) })
			if err := s.Err(); err != nil {
				t.Fatal(err)
			}
			if y == nil {
				t.Fatal("no output")
			}
			if _, ok := stats[op]; ok != u.kernel {
				t.Errorf("the profile has %s %v; want %v", op, ok, u.kernel)
			}
		})
	}
}

// testImagesAlone checks that first(s, n), an op on the first n images of
// a batch of five, gives the first three images' values to the bit with n
// = 5 as with n = 3, on one thread as on two, with each of the vector
// widths isas (none: the CPU's own): what a server needs for the same
// images whatever shares their forward, and machines of either kind.
func testImagesAlone(t *testing.T, isas []vectorWidth, first func(s *Scope, n int64) *Tensor) {
	t.Helper()
	before := NumThreads()
	defer SetNumThreads(before)
	defer vectorISA(vectorsAVX512)
	if len(isas) == 0 {
		isas = []vectorWidth{{"this CPU's", -1}}
	}
	s := opScope(t, NoGrad)
	var ref []float32
	for i := range 2 * len(isas) {
		isa, threads := isas[i/2], 1+i%2
		vectorISA(isa.limit)
		if err := SetNumThreads(threads); err != nil {
			t.Fatal(err)
		}
		all, err := s.Contiguous(s.Narrow(first(s, 5), 0, 0, 3)).Float32s()
		if err != nil {
			t.Fatal(err)
		}
		alone, err := s.Contiguous(first(s, 3)).Float32s()
		if err != nil {
			t.Fatal(err)
		}
		if ref == nil {
			ref = all
		}
		for i := range all {
			if all[i] != alone[i] || all[i] != ref[i] {
				t.Fatalf("%s vectors, %d threads, value %d: %v in the batch, %v alone, %v with %s vectors on one thread",
					isa.name, threads, i, all[i], alone[i], ref[i], isas[0].name)
			}
		}
	}
}

// convUses are the calls of a shim convolution kernel that runs x, w, b
// with options o: those it takes (without grad, without bias, in inference
// mode) and those it leaves to libtorch's convolution (the kernel off by
// set, an NCHW input, stride 2, two groups, no input channels, float64,
// bf16 autocast, an input that needs gradients, weights made in inference
// mode), for a test to add its own to.
func convUses(t *testing.T, x, w, b *Tensor, o Conv2dOptions, set func(on bool) bool) []kernelUse {
	with := func(f func(o *Conv2dOptions)) Conv2dOptions {
		c := o
		f(&c)
		return c
	}
	return []kernelUse{
		{"no grad", true, func(s *Scope) *Tensor { return s.Conv2d(x, w, b, o) }},
		{"without bias", true, func(s *Scope) *Tensor { return s.Conv2d(x, w, nil, o) }},
		{"inference mode", true, func(s *Scope) *Tensor {
			is := NewScope(Inference)
			defer is.Close()
			return adopted(s, is.Conv2d(x, w, b, o))
		}},
		{"kernel off", false, func(s *Scope) *Tensor {
			defer set(set(false))
			return s.Conv2d(x, w, b, o)
		}},
		{"NCHW input", false, func(s *Scope) *Tensor { return s.Conv2d(s.Contiguous(x), w, b, o) }},
		{"stride 3", false, func(s *Scope) *Tensor {
			return s.Conv2d(x, w, b, with(func(o *Conv2dOptions) { o.Stride = [2]int64{3, 3} }))
		}},
		{"two groups", false, func(s *Scope) *Tensor {
			return s.Conv2d(x, s.Narrow(w, 1, 0, w.Shape()[1]/2), b, with(func(o *Conv2dOptions) { o.Groups = 2 }))
		}},
		{"no input channels", false, func(s *Scope) *Tensor {
			return s.Conv2d(s.Narrow(x, 1, 0, 0), s.Narrow(w, 1, 0, 0), b, o)
		}},
		{"float64", false, func(s *Scope) *Tensor {
			return s.Conv2d(s.ToDType(x, Float64), s.ToDType(w, Float64), s.ToDType(b, Float64), o)
		}},
		{"bf16 autocast", false, func(s *Scope) *Tensor {
			as, err := NewAutocastScope(NoGrad, BFloat16)
			if err != nil {
				t.Skip(err)
			}
			defer as.Close()
			return adopted(s, as.Conv2d(x, w, b, o))
		}},
		{"input needs gradients", false, func(s *Scope) *Tensor {
			gs := NewScope(Grad)
			defer gs.Close()
			xg := gs.Clone(x)
			if err := xg.SetRequiresGrad(true); err != nil {
				t.Fatal(err)
			}
			return adopted(s, gs.Conv2d(xg, w, b, o))
		}},
		{"weights made in inference mode", false, func(s *Scope) *Tensor {
			is := NewScope(Inference)
			defer is.Close()
			return adopted(s, is.Conv2d(x, is.Clone(w), b, o))
		}},
	}
}

// forEachWidth runs f in a subtest for each vector width this CPU runs,
// the kernels held to it, and restores the widest after.
func forEachWidth(t *testing.T, f func(t *testing.T)) {
	for _, isa := range vectorISAs(t) {
		t.Run(isa.name, func(t *testing.T) {
			vectorISA(isa.limit)
			defer vectorISA(vectorsAVX512)
			if got := vectorISA(-1); got != isa.limit {
				t.Fatalf("the kernels run vectors %d, want %d", got, isa.limit)
			}
			f(t)
		})
	}
}

// convAgainstFloat64 convolves x, w, b with o, checks that the shim's
// kernel op ran and gave float32 of the reference's shape, and returns its
// error against libtorch's convolution in float64 (which no kernel of the
// shim runs), logged: the L2 norm of the error over that of |x| convolved
// with |w| plus |b|, the size of the terms each output sums (the scale
// floating-point summation's error bound takes: an output whose terms
// nearly cancel, as one of a few terms can, is no reason for a larger
// error), and the largest error.
func convAgainstFloat64(t *testing.T, op string, x, w, b *Tensor, o Conv2dOptions) (rel, largest float64) {
	t.Helper()
	s := opScope(t, NoGrad)
	var got *Tensor
	stats := profileOf(t, func() { got = s.Conv2d(x, w, b, o) })
	if _, ok := stats[op]; !ok {
		t.Fatalf("the profile has no %s: %v", op, stats)
	}
	want := s.Conv2d(float64Of(s, x), float64Of(s, w), float64Of(s, b), o)
	if m, err := got.Meta(); err != nil || m.DType != Float32 || !slices.Equal(m.Shape, want.Shape()) {
		t.Fatalf("output %+v (%v), want float32 of shape %v", m, err, want.Shape())
	}
	var absB *Tensor
	if b != nil {
		absB = s.Abs(float64Of(s, b))
	}
	size := opValues(t, s.Contiguous(s.Conv2d(s.Abs(float64Of(s, x)), s.Abs(float64Of(s, w)), absB, o)))
	rel, largest = errorL2(opValues(t, s.Contiguous(got)), opValues(t, s.Contiguous(want)), size)
	t.Logf("%v into %v: error %.2g of the terms' size (L2), largest %.2g", x.Shape(), w.Shape(), rel, largest)
	return rel, largest
}

// ConvKernelVectors names the widest vectors the limit leaves, and none
// where the kernels do not run.
func TestConvKernelVectors(t *testing.T) {
	defer vectorISA(vectorsAVX512)
	want := map[int]string{vectorsAVX512: "avx512", vectorsAVX2: "avx2", 0: ""}
	widest := vectorISA(-1)
	for _, limit := range []int{vectorsAVX512, vectorsAVX2, 0} {
		vectorISA(limit)
		if got := ConvKernelVectors(); got != want[min(limit, widest)] {
			t.Errorf("vectors limited to %d on a CPU of %d: %q, want %q", limit, widest, got, want[min(limit, widest)])
		}
	}
}
