package torch

import (
	"fmt"
	"testing"
)

// im2colOptions is a 3x3 convolution's stride s and padding 1.
func im2colOptions(s int64) Conv2dOptions {
	return Conv2dOptions{Stride: [2]int64{s, s}, Padding: [2]int64{1, 1}}
}

// The im2col kernel against libtorch's convolution in float64: stride 2
// from channels in and not in sixteens, stride 1 from channels the Winograd
// kernel does not take (an image's 1 and 3), into each of the product's
// widths (16 to 64, and 80 = 64 + 16), on maps of odd sizes and down to
// 1x1, with and without bias, on both vector widths. Measured: error
// 2.2e-8 to 2.7e-8 of the terms' size (convAgainstFloat64).
func TestIm2colConv(t *testing.T) {
	forEachWidth(t, func(t *testing.T) {
		g := opGen(t, 13)
		for _, c := range []struct {
			winogradCase
			stride int64
		}{
			{winogradCase{2, 32, 32, 16, 16, true}, 2},
			{winogradCase{1, 64, 64, 8, 8, true}, 2},
			{winogradCase{3, 20, 48, 7, 9, false}, 2},
			{winogradCase{1, 64, 80, 4, 4, true}, 2},
			{winogradCase{1, 16, 16, 1, 1, true}, 2},
			{winogradCase{2, 1, 32, 8, 8, true}, 1},
			{winogradCase{1, 3, 128, 5, 7, true}, 1},
			{winogradCase{2, 20, 16, 6, 6, false}, 1},
		} {
			x, w, b := c.inputs(opScope(t, NoGrad), g)
			if rel, _ := convAgainstFloat64(t, "ddpm::im2col_conv", x, w, b, im2colOptions(c.stride)); !(rel < 1e-6) {
				t.Errorf("%+v: error %.2g of the terms' size, want under 1e-6", c, rel)
			}
		}
	})
}

// The kernel runs only where it computes what was asked, without autograd;
// everything else goes to libtorch's convolution (or the Winograd kernel,
// for stride 1 from channels in sixteens), as does everything after
// SetIm2colConv(false).
func TestIm2colConvOnlyWhereItTakes(t *testing.T) {
	skipWithoutVectors(t)
	in := opScope(t, NoGrad)
	x, w, b := winogradCase{2, 20, 32, 8, 8, true}.inputs(in, nil)
	x16, w16, _ := winogradCase{2, 16, 32, 8, 8, true}.inputs(in, nil)
	conv := func(x, w *Tensor, o Conv2dOptions) func(s *Scope) *Tensor {
		return func(s *Scope) *Tensor { return s.Conv2d(x, w, b, o) }
	}
	uses := append(convUses(t, x, w, b, im2colOptions(2), SetIm2colConv),
		kernelUse{"stride 1", true, conv(x, w, im2colOptions(1))},
		kernelUse{"stride 1, 16 channels in", false, conv(x16, w16, im2colOptions(1))},
		kernelUse{"stride 2, 16 channels in", true, conv(x16, w16, im2colOptions(2))},
		kernelUse{"stride 2 by 1", false, conv(x, w, Conv2dOptions{Stride: [2]int64{2, 1}, Padding: [2]int64{1, 1}})},
		kernelUse{"padding 0", false, conv(x, w, Conv2dOptions{Stride: [2]int64{2, 2}})},
		kernelUse{"24 output channels", false, func(s *Scope) *Tensor {
			return s.Conv2d(x, s.Narrow(w, 0, 0, 24), s.Narrow(b, 0, 0, 24), im2colOptions(2))
		}},
		kernelUse{"1x1 kernel", false, func(s *Scope) *Tensor {
			return s.Conv2d(x, s.Contiguous(s.Narrow(s.Narrow(w, 2, 1, 1), 3, 1, 1)), b, Conv2dOptions{Stride: [2]int64{2, 2}})
		}},
	)
	testKernelUse(t, "ddpm::im2col_conv", uses)
}

// An image's values depend on nothing but the image: the same within a
// batch of five (whose blocks of output pixels straddle the images) as
// alone, on one thread as on two, with AVX-512 as with AVX2, to the bit.
func TestIm2colConvBatchIndependent(t *testing.T) {
	isas := vectorISAs(t)
	for _, stride := range []int64{1, 2} {
		t.Run(fmt.Sprintf("stride %d", stride), func(t *testing.T) {
			x, w, b := winogradCase{5, 24, 80, 9, 11, true}.inputs(opScope(t, NoGrad), nil)
			testImagesAlone(t, isas, func(s *Scope, n int64) *Tensor {
				return s.Conv2d(s.Narrow(x, 0, 0, n), w, b, im2colOptions(stride))
			})
		})
	}
}
