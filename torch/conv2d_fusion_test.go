package torch

import (
	"bytes"
	"strings"
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
			o := c.o
			o.Residual = c.res
			testFusedAsComposed(t, "aten::add", c.fused,
				func(s *Scope) *Tensor { return s.Conv2d(x, c.w, b, o) },
				func(s *Scope) *Tensor { return s.Add(s.Conv2d(x, c.w, b, c.o), c.res) })
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

// Conv2d with Upsample gives UpsampleNearest2d, then the convolution, to the
// bit: the shim's Winograd kernel reads the upsampled map from x (no
// aten::upsample_nearest2d in the profile), on maps that are and are not
// multiples of its tiles, with a residual too, with either vector width;
// other convolutions take the upsampled map made first. Under autograd the
// gradient at x is the unfused one's.
func TestConv2dUpsample(t *testing.T) {
	in := opScope(t, NoGrad)
	x, w3, b := winogradCase{2, 16, 32, 8, 8, true}.inputs(in, nil)
	odd, _, _ := winogradCase{3, 16, 32, 5, 7, true}.inputs(in, nil)
	_, w1, _ := pointwiseCase{2, 16, 32, 8, 8, true}.inputs(in, nil)
	res := in.ChannelsLast(in.Randn([]int64{2, 32, 16, 16}, Float32, CPU, nil))
	kernel := WinogradConvSupported()
	isas := []vectorWidth{{"", -1}}
	if kernel {
		isas = vectorISAs(t)
	}
	defer vectorISA(vectorsAVX512)
	for _, isa := range isas {
		vectorISA(isa.limit)
		for _, c := range []struct {
			name   string
			x, w   *Tensor
			o      Conv2dOptions
			kernel bool // the kernel reads the upsampled map from x
		}{
			{"winograd", x, w3, pad1, kernel},
			{"winograd, odd size", odd, w3, pad1, kernel},
			{"winograd, residual", x, w3, Conv2dOptions{Padding: [2]int64{1, 1}, Residual: res}, kernel},
			{"1x1", x, w1, Conv2dOptions{}, false},
			{"NCHW input", in.Contiguous(x), w3, pad1, false},
			{"stride 2", x, w3, Conv2dOptions{Stride: [2]int64{2, 2}, Padding: [2]int64{1, 1}}, false},
		} {
			t.Run(isa.name+" "+c.name, func(t *testing.T) {
				o := c.o
				o.Upsample = 2
				testFusedAsComposed(t, "aten::upsample_nearest2d", c.kernel,
					func(s *Scope) *Tensor { return s.Conv2d(c.x, c.w, b, o) },
					func(s *Scope) *Tensor {
						shape := c.x.Shape()
						plain := c.o
						plain.Residual = nil
						y := s.Conv2d(s.UpsampleNearest2d(c.x, 2*shape[2], 2*shape[3]), c.w, b, plain)
						if c.o.Residual != nil {
							y = s.Add(y, c.o.Residual)
						}
						return y
					})
			})
		}
	}
	t.Run("gradient", func(t *testing.T) {
		s := opScope(t, Grad)
		grad := func(fused bool) []float64 {
			xg := s.Clone(x)
			if err := xg.SetRequiresGrad(true); err != nil {
				t.Fatal(err)
			}
			var y *Tensor
			if fused {
				y = s.Conv2d(xg, w3, b, Conv2dOptions{Padding: [2]int64{1, 1}, Upsample: 2})
			} else {
				y = s.Conv2d(s.UpsampleNearest2d(xg, 16, 16), w3, b, pad1)
			}
			s.Backward(s.Sum(s.Square(y), nil, false))
			return opValues(t, s.Grad(xg))
		}
		got, want := grad(true), grad(false)
		if err := s.Err(); err != nil {
			t.Fatal(err)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("gradient %d at x: %g, want %g", i, got[i], want[i])
			}
		}
	})
	bad := NewScope(NoGrad)
	defer bad.Close()
	if y := bad.Conv2d(x, w3, b, Conv2dOptions{Padding: [2]int64{1, 1}, Upsample: -1}); y != nil || bad.Err() == nil ||
		!strings.Contains(bad.Err().Error(), "upsampling factor") {
		t.Errorf("upsampling by -1: %v, %v; want an error about the factor", y, bad.Err())
	}
}

// testFusedAsComposed checks that fused gives composed's values to the bit,
// and that op, the step fused leaves out where its kernel runs, is in its
// profile exactly when it does not (kernel false).
func testFusedAsComposed(t *testing.T, op string, kernel bool, fused, composed func(s *Scope) *Tensor) {
	t.Helper()
	s := opScope(t, NoGrad)
	var got *Tensor
	stats := profileOf(t, func() { got = fused(s) })
	want := composed(s)
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(contiguousBytes(t, s, got), contiguousBytes(t, s, want)) {
		t.Error("the fused convolution's values differ from the ops composed")
	}
	if _, ran := stats[op]; ran == kernel {
		t.Errorf("%s in the profile %v; want %v", op, ran, !kernel)
	}
}
