package torch

import (
	"bytes"
	"testing"
)

// Conv2d with a Residual gives the convolution plus the residual, to the
// bit, whichever runs it: the shim's Winograd and 1x1 kernels add a
// channels-last float32 residual of the output's shape in their last pass
// (no aten::add in the profile); other residuals, and libtorch's
// convolutions, take an add after. Gradients reach the residual under
// autograd.
func TestConv2dResidual(t *testing.T) {
	in := opScope(t, NoGrad)
	x, w3, b := winogradCase{2, 16, 32, 8, 8, true}.inputs(in, nil)
	_, w1, _ := pointwiseCase{2, 16, 32, 8, 8, true}.inputs(in, nil)
	res := in.ChannelsLast(in.Randn([]int64{2, 32, 8, 8}, Float32, CPU, nil))
	kernels := WinogradConvSupported()
	for _, c := range []struct {
		name  string
		w     *Tensor
		o     Conv2dOptions
		res   *Tensor
		fused bool // the kernel adds the residual itself
	}{
		{"winograd", w3, pad1, res, kernels},
		{"1x1", w1, Conv2dOptions{}, res, kernels},
		{"winograd, NCHW residual", w3, pad1, in.Contiguous(res), false},
		{"1x1, broadcast residual", w1, Conv2dOptions{}, in.Randn([]int64{32, 1, 1}, Float32, CPU, nil), false},
		{"stride 2 (libtorch)", w3, Conv2dOptions{Stride: [2]int64{2, 2}, Padding: [2]int64{1, 1}},
			in.Randn([]int64{2, 32, 4, 4}, Float32, CPU, nil), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := opScope(t, NoGrad)
			o := c.o
			o.Residual = c.res
			var got *Tensor
			stats := profileOf(t, func() { got = s.Conv2d(x, c.w, b, o) })
			want := s.Add(s.Conv2d(x, c.w, b, c.o), c.res)
			if err := s.Err(); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(contiguousBytes(t, s, got), contiguousBytes(t, s, want)) {
				t.Error("the convolution with its residual differs from the convolution, then Add")
			}
			if _, added := stats["aten::add"]; added == c.fused {
				t.Errorf("aten::add in the profile %v; want %v", added, !c.fused)
			}
		})
	}
	t.Run("gradient", func(t *testing.T) {
		s := opScope(t, Grad)
		r := s.Clone(res)
		if err := r.SetRequiresGrad(true); err != nil {
			t.Fatal(err)
		}
		s.Backward(s.Sum(s.Conv2d(x, w3, b, Conv2dOptions{Padding: [2]int64{1, 1}, Residual: r}), nil, false))
		g := s.Grad(r)
		if err := s.Err(); err != nil {
			t.Fatal(err)
		}
		for i, v := range opValues(t, g) {
			if v != 1 {
				t.Fatalf("gradient %d at the residual: %g, want 1", i, v)
			}
		}
	})
}
