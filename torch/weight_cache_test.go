package torch

import (
	"bytes"
	"strings"
	"testing"
)

// Under CPU bf16 autocast without autograd the shim casts a convolution's
// and a linear layer's float32 weights to bfloat16 once and keeps the copy
// while the weight is unchanged: the second call casts nothing, gives the
// first call's bits, and a weight changed in place is cast again (its
// result is that of a fresh copy of the changed weight).
func TestBF16WeightCopies(t *testing.T) {
	in := opScope(t, NoGrad)
	x := in.ToDType(in.ChannelsLast(in.Randn([]int64{2, 8, 6, 6}, Float32, CPU, nil)), BFloat16)
	x2 := in.ToDType(in.Randn([]int64{3, 8}, Float32, CPU, nil), BFloat16)
	for _, op := range []struct {
		name string
		w, b *Tensor
		f    func(s *Scope, w, b *Tensor) *Tensor
	}{
		{"conv2d", in.Randn([]int64{4, 8, 3, 3}, Float32, CPU, nil), in.Randn([]int64{4}, Float32, CPU, nil),
			func(s *Scope, w, b *Tensor) *Tensor { return s.Conv2d(x, w, b, Conv2dOptions{Padding: [2]int64{1, 1}}) }},
		{"linear", in.Randn([]int64{5, 8}, Float32, CPU, nil), in.Randn([]int64{5}, Float32, CPU, nil),
			func(s *Scope, w, b *Tensor) *Tensor { return s.Linear(x2, w, b) }},
	} {
		t.Run(op.name, func(t *testing.T) {
			s, err := NewAutocastScope(Inference, BFloat16)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			bits := func(y *Tensor) []byte {
				t.Helper()
				if y.DType() != BFloat16 {
					t.Fatalf("output %v, want bfloat16", y.DType())
				}
				return contiguousBytes(t, s, y)
			}
			var first, second []byte
			if c := castCalls(t, func() { first = bits(op.f(s, op.w, op.b)) }); c < 2 {
				t.Errorf("first call cast %d tensors, want the weight and the bias", c)
			}
			if c := castCalls(t, func() { second = bits(op.f(s, op.w, op.b)) }); c != 0 {
				t.Errorf("second call cast %d tensors, want none", c)
			}
			if !bytes.Equal(first, second) {
				t.Error("second call differs from the first")
			}
			in.MulScalarInPlace(op.w, 2)
			in.AddScalarInPlace(op.b, 1)
			changed := bits(op.f(s, op.w, op.b))
			fresh := bits(op.f(s, in.Clone(op.w), in.Clone(op.b)))
			if err := s.Err(); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(changed, fresh) || bytes.Equal(changed, first) {
				t.Errorf("after the weights changed in place: same as fresh copies %v, same as before %v; want true, false",
					bytes.Equal(changed, fresh), bytes.Equal(changed, first))
			}
		})
	}
}

// withWeightCacheLimit empties the weight cache, runs f with its limit set
// to bytes, and restores the limit.
func withWeightCacheLimit(t *testing.T, bytes int64, f func()) {
	t.Helper()
	before, err := WeightCache()
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := SetWeightCacheLimit(before.LimitBytes); err != nil {
			t.Error(err)
		}
	}()
	if err := SetWeightCacheLimit(0); err != nil {
		t.Fatal(err)
	}
	if got, err := WeightCache(); err != nil || got.Bytes != 0 || got.Forms != 0 {
		t.Fatalf("with the limit at 0: %+v, %v; want no forms", got, err)
	}
	if err := SetWeightCacheLimit(bytes); err != nil {
		t.Fatal(err)
	}
	f()
}

// The forms are held to the limit: a Winograd transform that would pass it
// is not made and its convolution runs libtorch's kernel, with libtorch's
// values; a closed weight's transform makes room for the next one; lowering
// the limit drops forms.
func TestWeightCacheLimitWinograd(t *testing.T) {
	skipWithoutVectors(t)
	s := opScope(t, NoGrad)
	c := winogradCase{2, 16, 32, 8, 8, true}
	const transform = 36 * 16 * 32 * 4
	x, w1, b := c.inputs(s, nil)
	_, w2, _ := c.inputs(s, nil)
	_, w3, _ := c.inputs(s, nil)
	figures := func(want WeightCacheStats, when string) {
		t.Helper()
		got, err := WeightCache()
		if err != nil {
			t.Fatal(err)
		}
		if got.Bytes != want.Bytes || got.Forms != want.Forms || got.LimitBytes != want.LimitBytes {
			t.Errorf("%s: %+v, want %+v", when, got, want)
		}
	}
	// conv convolves x with w and says whether the kernel ran; its values
	// are checked against libtorch's convolution.
	conv := func(w *Tensor) bool {
		t.Helper()
		var y *Tensor
		stats := profileOf(t, func() { y = s.Conv2d(x, w, b, pad1) })
		_, kernel := stats["ddpm::winograd_conv"]
		off := SetWinogradConv(false)
		ref := s.Conv2d(x, w, b, pad1)
		SetWinogradConv(off)
		if err := s.Err(); err != nil {
			t.Fatal(err)
		}
		want := opValues(t, s.Contiguous(ref))
		if rel, _ := errorL2(opValues(t, s.Contiguous(y)), want, want); !(rel < 1e-5) {
			t.Errorf("%.2g relative L2 from libtorch's convolution", rel)
		}
		if !kernel && !bytes.Equal(contiguousBytes(t, s, y), contiguousBytes(t, s, ref)) {
			t.Error("without the kernel the values differ from libtorch's convolution")
		}
		return kernel
	}
	withWeightCacheLimit(t, 0, func() {
		if conv(w1) {
			t.Error("with the limit at 0 the kernel ran")
		}
		figures(WeightCacheStats{0, 0, 0}, "limit 0")
	})
	withWeightCacheLimit(t, transform, func() {
		if !conv(w1) || !conv(w1) {
			t.Error("the first weight's transform fits, yet libtorch's convolution ran")
		}
		figures(WeightCacheStats{transform, 1, transform}, "one transform")
		if conv(w2) {
			t.Error("a second transform passes the limit, yet the kernel ran")
		}
		figures(WeightCacheStats{transform, 1, transform}, "a second weight over the limit")
		w1.Close()
		if !conv(w2) {
			t.Error("the first weight closed, the second's transform fits, yet libtorch's convolution ran")
		}
		figures(WeightCacheStats{transform, 1, transform}, "the first weight closed")
	})
	withWeightCacheLimit(t, 2*transform, func() {
		conv(w2)
		conv(w3)
		figures(WeightCacheStats{2 * transform, 2, 2 * transform}, "two transforms")
		if err := SetWeightCacheLimit(transform); err != nil {
			t.Fatal(err)
		}
		figures(WeightCacheStats{transform, 1, transform}, "the limit lowered to one")
	})
	if err := SetWeightCacheLimit(-1); err == nil || strings.Contains(err.Error(), "\n") {
		t.Errorf("a negative limit: %v; want a one-line error", err)
	}
}

// Under bf16 autocast with no room for copies, each call casts its weights
// again, with the same values as with the cache.
func TestWeightCacheLimitBF16(t *testing.T) {
	in := opScope(t, NoGrad)
	x := in.ToDType(in.ChannelsLast(in.Randn([]int64{2, 8, 6, 6}, Float32, CPU, nil)), BFloat16)
	w, b := in.Randn([]int64{4, 8, 3, 3}, Float32, CPU, nil), in.Randn([]int64{4}, Float32, CPU, nil)
	s, err := NewAutocastScope(Inference, BFloat16)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	conv := func() []byte { return contiguousBytes(t, s, s.Conv2d(x, w, b, Conv2dOptions{Padding: [2]int64{1, 1}})) }
	cached := conv()
	withWeightCacheLimit(t, 0, func() {
		for i := range 2 {
			var got []byte
			if c := castCalls(t, func() { got = conv() }); c < 2 {
				t.Errorf("call %d without room for copies cast %d tensors, want the weight and the bias", i, c)
			}
			if !bytes.Equal(got, cached) {
				t.Errorf("call %d without room for copies differs from the cached copies' result", i)
			}
		}
	})
}

// A frozen weight's bfloat16 copy made first under inference (a sampling
// preview, say) serves a later autocast call with autograd, whose backward
// saves it: the copy is a plain tensor, not an inference one.
func TestBF16CopyFromInferenceServesAutograd(t *testing.T) {
	if !CPUHasBF16() {
		t.Skip("the CPU has no bfloat16 instructions")
	}
	ns := NewScope(NoGrad)
	defer ns.Close()
	w := ns.Randn([]int64{8, 4}, Float32, CPU, nil)         // frozen: no gradient
	cw := ns.Randn([]int64{16, 4, 3, 3}, Float32, CPU, nil) // frozen
	inf, err := NewAutocastScope(Inference, BFloat16)
	if err != nil {
		t.Fatal(err)
	}
	inf.Linear(inf.Randn([]int64{2, 4}, Float32, CPU, nil), w, nil)
	inf.Conv2d(inf.Randn([]int64{1, 4, 5, 5}, Float32, CPU, nil), cw, nil, Conv2dOptions{Padding: [2]int64{1, 1}})
	if err := inf.Err(); err != nil {
		t.Fatal(err)
	}
	inf.Close()
	g, err := NewAutocastScope(Grad, BFloat16)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	x := g.Randn([]int64{2, 4}, Float32, CPU, nil)
	xc := g.Randn([]int64{1, 4, 5, 5}, Float32, CPU, nil)
	for _, v := range []*Tensor{x, xc} {
		if err := v.SetRequiresGrad(true); err != nil {
			t.Fatal(err)
		}
	}
	y := g.Add(g.Sum(g.ToDType(g.Linear(x, w, nil), Float32), nil, false),
		g.Sum(g.ToDType(g.Conv2d(xc, cw, nil, Conv2dOptions{Padding: [2]int64{1, 1}}), Float32), nil, false))
	g.Backward(y)
	if err := g.Err(); err != nil {
		t.Fatalf("backward through frozen weights cached under inference: %v", err)
	}
}
