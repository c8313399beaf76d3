package torch

import (
	"bytes"
	"math"
	"strings"
	"testing"
)

// winogradCase is a 3x3 convolution (stride 1, padding 1) of a channels-last
// float32 map of n x ic x h x w into oc channels.
type winogradCase struct {
	n, ic, oc, h, w int64
	bias            bool
}

// inputs returns x, w and b (nil without bias) for c, weights scaled as a
// network's (variance 1 / (9 ic)), made in a NoGrad scope (not inference
// tensors, whose transforms the shim does not keep).
func (c winogradCase) inputs(s *Scope, g *Generator) (x, w, b *Tensor) {
	x = s.ChannelsLast(s.Randn([]int64{c.n, c.ic, c.h, c.w}, Float32, CPU, g))
	w = s.MulScalar(s.Randn([]int64{c.oc, c.ic, 3, 3}, Float32, CPU, g), 1/math.Sqrt(float64(9*c.ic)))
	if c.bias {
		b = s.Randn([]int64{c.oc}, Float32, CPU, g)
	}
	return x, w, b
}

// The Winograd kernel against libtorch's convolution in float64 (which the
// kernel never runs): channel counts that use each of the kernel's product
// widths (16, 32, 48 and 64 output channels at once, and 80 = 64 + 16),
// maps that are and are not multiples of the 4x4 tiles (down to 1x1), with
// and without bias, on the sizes of the small preset. Measured: error
// 6e-8 to 1.4e-7 of the terms' size (convAgainstFloat64), largest error
// 5e-7 to 3.2e-5 of values about 1.
func TestWinogradConv(t *testing.T) { forEachWidth(t, testWinogradConv) }

func testWinogradConv(t *testing.T) {
	g := opGen(t, 5)
	for _, c := range []winogradCase{
		{2, 16, 16, 8, 8, true},
		{3, 32, 48, 5, 7, true},
		{1, 64, 80, 1, 1, false},
		{2, 128, 64, 9, 13, true},
		{1, 16, 32, 2, 3, false},
		{4, 32, 32, 32, 32, true},
		{2, 96, 64, 16, 16, true},
		{1, 64, 128, 4, 4, true},
	} {
		x, w, b := c.inputs(opScope(t, NoGrad), g)
		if rel, largest := convAgainstFloat64(t, "ddpm::winograd_conv", x, w, b, pad1); !(rel < 1e-5) || !(largest < 1e-3) {
			t.Errorf("%+v: error %.2g of the terms' size, largest %.2g; want under 1e-5 and 1e-3", c, rel, largest)
		}
	}
}

// The kernel runs only where it computes what was asked, without autograd;
// everything else goes to libtorch's convolution, as does everything after
// SetWinogradConv(false).
func TestWinogradConvOnlyWhereItTakes(t *testing.T) {
	skipWithoutVectors(t)
	in := opScope(t, NoGrad)
	x, w, b := winogradCase{2, 16, 32, 8, 8, true}.inputs(in, nil)
	testKernelUse(t, "ddpm::winograd_conv", append(convUses(t, x, w, b, pad1, SetWinogradConv),
		kernelUse{"padding 0", false, func(s *Scope) *Tensor { return s.Conv2d(x, w, b, Conv2dOptions{}) }},
		kernelUse{"24 output channels", false, func(s *Scope) *Tensor {
			return s.Conv2d(x, s.Narrow(w, 0, 0, 24), s.Narrow(b, 0, 0, 24), pad1)
		}},
		kernelUse{"dilation 2", false, func(s *Scope) *Tensor {
			return s.Conv2d(x, w, b, Conv2dOptions{Padding: [2]int64{2, 2}, Dilation: [2]int64{2, 2}})
		}},
		kernelUse{"8 input channels", false, func(s *Scope) *Tensor {
			return s.Conv2d(s.Narrow(x, 1, 0, 8), s.Contiguous(s.Narrow(w, 1, 0, 8)), b, pad1)
		}},
		kernelUse{"5x5 kernel", false, func(s *Scope) *Tensor {
			return s.Conv2d(x, s.Randn([]int64{32, 16, 5, 5}, Float32, CPU, nil), b, Conv2dOptions{Padding: [2]int64{2, 2}})
		}},
	))
}

// An image's values depend on nothing but the image: the same within a
// batch of five as alone, on one thread as on two, with AVX-512 as with
// AVX2, to the bit (a server's requests give the same images whatever
// shares their forward, and so do machines of either kind).
func TestWinogradConvBatchIndependent(t *testing.T) {
	isas := vectorISAs(t)
	in := opScope(t, NoGrad)
	for _, c := range []winogradCase{
		{5, 48, 80, 18, 18, true}, // 25 tiles an image; 64 + 16 channels out
		{5, 256, 192, 8, 8, true}, // one block, its three groups of 64 channels out on two threads
	} {
		x, w, b := c.inputs(in, nil)
		testImagesAlone(t, isas, func(s *Scope, n int64) *Tensor { return s.Conv2d(s.Narrow(x, 0, 0, n), w, b, pad1) })
	}
}

// The weight's transform is made once and kept while the weight is
// unchanged, and made again after an in-place change (an optimizer or EMA step, a checkpoint
// loaded into it): the result is then that of a fresh copy of the changed
// weight.
func TestWinogradConvWeightChanged(t *testing.T) {
	skipWithoutVectors(t)
	s := opScope(t, NoGrad)
	x, w, b := winogradCase{2, 16, 16, 8, 8, true}.inputs(s, nil)
	bits := func(y *Tensor) []byte { return contiguousBytes(t, s, y) }
	// Making the transform converts the weight to float64: the first call
	// does, the second does not.
	var first, again []byte
	if c := castCalls(t, func() { first = bits(s.Conv2d(x, w, b, pad1)) }); c != 1 {
		t.Errorf("first call converted %d tensors, want the weight", c)
	}
	if c := castCalls(t, func() { again = bits(s.Conv2d(x, w, b, pad1)) }); c != 0 {
		t.Errorf("second call converted %d tensors, want none", c)
	}
	if !bytes.Equal(first, again) {
		t.Fatal("a second call differs from the first")
	}
	s.MulScalarInPlace(w, 2)
	s.AddScalarInPlace(b, 1)
	changed := bits(s.Conv2d(x, w, b, pad1))
	fresh := bits(s.Conv2d(x, s.Clone(w), s.Clone(b), pad1))
	if !bytes.Equal(changed, fresh) || bytes.Equal(changed, first) {
		t.Errorf("after the weights changed in place: same as fresh copies %v, same as before %v; want true, false",
			bytes.Equal(changed, fresh), bytes.Equal(changed, first))
	}
}

// A weight without output channels is libtorch's one-line error, as
// without the kernel (it never reaches the kernel, whose blocks would
// divide by the channels).
func TestWinogradConvNoOutputChannels(t *testing.T) {
	skipWithoutVectors(t)
	s := NewScope(NoGrad)
	defer s.Close()
	x := s.ChannelsLast(s.Randn([]int64{2, 16, 8, 8}, Float32, CPU, nil))
	if y := s.Conv2d(x, s.Randn([]int64{0, 16, 3, 3}, Float32, CPU, nil), nil, pad1); y != nil {
		t.Fatalf("a convolution into no channels gave %v; want an error", y.Shape())
	}
	err := s.Err()
	if err == nil || !strings.Contains(err.Error(), "expected weight to be at least 1 at dimension 0") ||
		strings.Contains(err.Error(), "\n") {
		t.Errorf("error %v; want libtorch's one line about the weight's size", err)
	}
}

// A closed weight's transform is freed at the next EmptyCPUCache (or
// TrimCPUCache, which a server calls every minute): a closed model's
// transforms do not stay in memory.
func TestWinogradConvTransformFreedWithWeight(t *testing.T) {
	skipWithoutVectors(t)
	s := opScope(t, NoGrad)
	x := s.ChannelsLast(s.Randn([]int64{1, 256, 4, 4}, Float32, CPU, nil))
	w := s.Randn([]int64{256, 256, 3, 3}, Float32, CPU, nil)
	s.Conv2d(x, w, nil, pad1) // makes w's transform, 36 x 256 x 256 floats
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	before, err := CPUCache()
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	if err := EmptyCPUCache(); err != nil {
		t.Fatal(err)
	}
	after, err := CPUCache()
	if err != nil {
		t.Fatal(err)
	}
	const weight, transform = 256 * 256 * 9 * 4, 36 * 256 * 256 * 4
	if freed := before.InUseBytes - after.InUseBytes; freed < weight+transform {
		t.Errorf("closing the weight freed %d bytes, want at least %d (the weight and its transform)", freed, weight+transform)
	}
}
