package torch

import (
	"bytes"
	"math"
	"testing"
)

// pointwiseCase is a 1x1 convolution of a channels-last float32 map of n x
// ic x h x w into oc channels.
type pointwiseCase struct {
	n, ic, oc, h, w int64
	bias            bool
}

// inputs returns x, w and b (nil without bias) for c, weights scaled as a
// network's (variance 1 / ic), made in a NoGrad scope (not inference
// tensors, whose forms the shim does not keep).
func (c pointwiseCase) inputs(s *Scope, g *Generator) (x, w, b *Tensor) {
	x = s.ChannelsLast(s.Randn([]int64{c.n, c.ic, c.h, c.w}, Float32, CPU, g))
	w = s.MulScalar(s.Randn([]int64{c.oc, c.ic, 1, 1}, Float32, CPU, g), 1/math.Sqrt(float64(c.ic)))
	if c.bias {
		b = s.Randn([]int64{c.oc}, Float32, CPU, g)
	}
	return x, w, b
}

// The 1x1 kernel against libtorch's convolution in float64: output
// channels in each of the product's widths (16, 32, 48, 64, and 80 = 64 +
// 16, 192 = three groups), input channels that are not multiples of 16,
// pixel counts that are and are not multiples of the products' 12 rows (one
// pixel alone), with and without bias, on both vector widths. Measured:
// error 1.8e-8 to 2.7e-8 of the terms' size (convAgainstFloat64), as
// float32 dot products of up to 128 terms give.
func TestPointwiseConv(t *testing.T) {
	forEachWidth(t, func(t *testing.T) {
		g := opGen(t, 9)
		for _, c := range []pointwiseCase{
			{2, 16, 16, 8, 8, true},
			{3, 20, 48, 5, 7, true},
			{1, 96, 32, 32, 32, true},
			{2, 64, 80, 3, 3, false},
			{1, 7, 16, 1, 1, true},
			{4, 128, 192, 8, 8, true},
			{2, 3, 64, 6, 6, false},
		} {
			x, w, b := c.inputs(opScope(t, NoGrad), g)
			if rel, _ := convAgainstFloat64(t, "ddpm::pointwise_conv", x, w, b, Conv2dOptions{}); !(rel < 1e-6) {
				t.Errorf("%+v: error %.2g of the terms' size, want under 1e-6", c, rel)
			}
		}
	})
}

// The products compute any number of rows, whole groups of the register
// blocks (12 or 6 rows) and then the rest in a product of their own: every
// pixel count from 1 to 25 (each rest for each block height, and
// blocks before it) into each of the product's widths, on both vector
// widths, against libtorch's convolution in float64.
func TestPointwiseConvEveryRowCount(t *testing.T) {
	forEachWidth(t, func(t *testing.T) {
		g := opGen(t, 12)
		for oc := int64(16); oc <= 64; oc += 16 {
			for pixels := int64(1); pixels <= 25; pixels++ {
				c := pointwiseCase{1, 24, oc, 1, pixels, true}
				x, w, b := c.inputs(opScope(t, NoGrad), g)
				if rel, _ := convAgainstFloat64(t, "ddpm::pointwise_conv", x, w, b, Conv2dOptions{}); !(rel < 1e-6) {
					t.Errorf("%+v: error %.2g of the terms' size, want under 1e-6", c, rel)
				}
			}
		}
	})
}

// The kernel runs only where it computes what was asked, without autograd;
// everything else goes to libtorch's convolution, as does everything after
// SetPointwiseConv(false).
func TestPointwiseConvOnlyWhereItTakes(t *testing.T) {
	skipWithoutVectors(t)
	in := opScope(t, NoGrad)
	x, w, b := pointwiseCase{2, 16, 32, 8, 8, true}.inputs(in, nil)
	testKernelUse(t, "ddpm::pointwise_conv", append(convUses(t, x, w, b, Conv2dOptions{}, SetPointwiseConv),
		kernelUse{"padding 1", false, func(s *Scope) *Tensor { return s.Conv2d(x, w, b, pad1) }},
		kernelUse{"24 output channels", false, func(s *Scope) *Tensor {
			return s.Conv2d(x, s.Narrow(w, 0, 0, 24), s.Narrow(b, 0, 0, 24), Conv2dOptions{})
		}},
		kernelUse{"3x3 kernel", false, func(s *Scope) *Tensor {
			return s.Conv2d(x, s.Randn([]int64{32, 16, 3, 3}, Float32, CPU, nil), b, pad1)
		}},
	))
}

// An image's values depend on nothing but the image: the same within a
// batch of five (whose blocks of pixels straddle the images) as alone, on
// one thread as on two, with AVX-512 as with AVX2, to the bit.
func TestPointwiseConvBatchIndependent(t *testing.T) {
	isas := vectorISAs(t)
	x, w, b := pointwiseCase{5, 48, 80, 7, 7, true}.inputs(opScope(t, NoGrad), nil)
	testImagesAlone(t, isas, func(s *Scope, n int64) *Tensor {
		return s.Conv2d(s.Narrow(x, 0, 0, n), w, b, Conv2dOptions{})
	})
}

// The weight's transpose is made once and kept while the weight is
// unchanged, and made again after an in-place change; with no room in the
// weight cache the convolution is libtorch's, to the bit.
func TestPointwiseConvWeightForms(t *testing.T) {
	skipWithoutVectors(t)
	s := opScope(t, NoGrad)
	x, w, b := pointwiseCase{2, 32, 48, 6, 6, true}.inputs(s, nil)
	bits := func(y *Tensor) []byte { return contiguousBytes(t, s, y) }
	forms := func() int64 {
		t.Helper()
		st, err := WeightCache()
		if err != nil {
			t.Fatal(err)
		}
		return st.Forms
	}
	if err := EmptyCPUCache(); err != nil { // drops dead weights' forms now, not during the calls
		t.Fatal(err)
	}
	before := forms()
	first := bits(s.Conv2d(x, w, b, Conv2dOptions{}))
	again := bits(s.Conv2d(x, w, b, Conv2dOptions{}))
	if n := forms() - before; n != 1 {
		t.Errorf("two calls with one weight made %d forms, want 1", n)
	}
	if !bytes.Equal(first, again) {
		t.Error("a second call differs from the first")
	}
	s.MulScalarInPlace(w, 2)
	changed := bits(s.Conv2d(x, w, b, Conv2dOptions{}))
	fresh := bits(s.Conv2d(x, s.Clone(w), b, Conv2dOptions{}))
	if !bytes.Equal(changed, fresh) || bytes.Equal(changed, first) {
		t.Errorf("after the weight changed in place: same as a fresh copy %v, same as before %v; want true, false",
			bytes.Equal(changed, fresh), bytes.Equal(changed, first))
	}
	withWeightCacheLimit(t, 0, func() {
		var y *Tensor
		stats := profileOf(t, func() { y = s.Conv2d(x, w, b, Conv2dOptions{}) })
		if _, ok := stats["ddpm::pointwise_conv"]; ok {
			t.Error("with the weight cache's limit at 0 the kernel ran")
		}
		off := SetPointwiseConv(false)
		ref := s.Conv2d(x, w, b, Conv2dOptions{})
		SetPointwiseConv(off)
		if !bytes.Equal(bits(y), bits(ref)) {
			t.Error("without room for the transpose the values differ from libtorch's convolution")
		}
	})
}
