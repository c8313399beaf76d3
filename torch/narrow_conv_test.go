package torch

import (
	"math"
	"testing"
)

// narrowInputs returns x (n x ic x h x w, channels-last), w (oc x ic x 3 x
// 3, scaled as a network's) and b (nil without bias), drawn from g (the
// global generator for nil), made in a NoGrad scope.
func narrowInputs(s *Scope, g *Generator, n, ic, oc, h, w int64, bias bool) (x, wt, b *Tensor) {
	x = s.ChannelsLast(s.Randn([]int64{n, ic, h, w}, Float32, CPU, g))
	wt = s.MulScalar(s.Randn([]int64{oc, ic, 3, 3}, Float32, CPU, g), 1/math.Sqrt(float64(9*ic)))
	if bias {
		b = s.Randn([]int64{oc}, Float32, CPU, g)
	}
	return x, wt, b
}

// The narrow kernel against libtorch's convolution in float64: each of 1
// to 8 output channels, 16 to 128 input channels, maps down to 1x1 and of
// odd sizes (pixels in groups and alone), with and without bias, on both
// vector widths. Measured: error 7e-9 to 3.5e-8 of the terms' size
// (convAgainstFloat64; a 1x1 map into one channel is one sum of 16 terms,
// which can nearly cancel, so its error relative to itself has no bound).
func TestNarrowConv(t *testing.T) {
	forEachWidth(t, func(t *testing.T) {
		g := opGen(t, 11)
		for oc := int64(1); oc <= 8; oc++ {
			for _, c := range []struct {
				n, ic, h, w int64
				bias        bool
			}{{2, 32, 8, 8, true}, {3, 128, 5, 7, true}, {1, 16, 1, 1, false}, {1, 48, 2, 9, false}} {
				x, w, b := narrowInputs(opScope(t, NoGrad), g, c.n, c.ic, oc, c.h, c.w, c.bias)
				if rel, _ := convAgainstFloat64(t, "ddpm::narrow_conv", x, w, b, pad1); !(rel < 1e-6) {
					t.Errorf("%d channels out, %+v: error %.2g of the terms' size, want under 1e-6", oc, c, rel)
				}
			}
		}
	})
}

// The kernel runs only where it computes what was asked, without autograd;
// everything else goes to libtorch's convolution (or the Winograd kernel,
// for 16 output channels), as does everything after SetNarrowConv(false).
func TestNarrowConvOnlyWhereItTakes(t *testing.T) {
	skipWithoutVectors(t)
	in := opScope(t, NoGrad)
	x, w, b := narrowInputs(in, nil, 2, 16, 4, 8, 8, true)
	_, w9, b9 := narrowInputs(in, nil, 2, 16, 9, 8, 8, true)
	_, w16, b16 := narrowInputs(in, nil, 2, 16, 16, 8, 8, true)
	testKernelUse(t, "ddpm::narrow_conv", append(convUses(t, x, w, b, pad1, SetNarrowConv),
		kernelUse{"padding 0", false, func(s *Scope) *Tensor { return s.Conv2d(x, w, b, Conv2dOptions{}) }},
		kernelUse{"8 input channels", false, func(s *Scope) *Tensor {
			return s.Conv2d(s.Narrow(x, 1, 0, 8), s.Contiguous(s.Narrow(w, 1, 0, 8)), b, pad1)
		}},
		kernelUse{"9 output channels", false, func(s *Scope) *Tensor { return s.Conv2d(x, w9, b9, pad1) }},
		kernelUse{"16 output channels", false, func(s *Scope) *Tensor { return s.Conv2d(x, w16, b16, pad1) }},
	))
}

// An image's values depend on nothing but the image: the same within a
// batch of five as alone, on one thread as on two, with AVX-512 as with
// AVX2, to the bit.
func TestNarrowConvBatchIndependent(t *testing.T) {
	isas := vectorISAs(t)
	for _, oc := range []int64{1, 3} {
		x, w, b := narrowInputs(opScope(t, NoGrad), nil, 5, 32, oc, 9, 11, true)
		testImagesAlone(t, isas, func(s *Scope, n int64) *Tensor { return s.Conv2d(s.Narrow(x, 0, 0, n), w, b, pad1) })
	}
}
