package torch

import (
	"bytes"
	"fmt"
	"math"
	"strings"
	"testing"
)

// groupNormRef is SiLU(GroupNorm(x + shift)) (or without the SiLU) by
// libtorch's own ops in float64, which the shim's float32 kernel never runs.
func groupNormRef(s *Scope, x, shift *Tensor, groups int64, w, b *Tensor, silu bool) *Tensor {
	in := float64Of(s, x)
	if shift != nil {
		in = s.Add(in, s.Unsqueeze(s.Unsqueeze(float64Of(s, shift), -1), -1))
	}
	y := s.GroupNorm(in, groups, float64Of(s, w), float64Of(s, b), 1e-5)
	if silu {
		y = s.SiLU(y)
	}
	return y
}

// The shim's GroupNorm kernel (float32 without autograd) against libtorch's
// ops in float64: NCHW and channels-last maps, with and without the shift,
// the affine weight and bias and the SiLU, sizes with and without a partial
// 256-pixel chunk and 16-value tail, maps whose mean is far from zero (the
// variance is of centred values), and values large enough for SiLU's
// exponential to clamp. The output keeps the input's layout.
func TestGroupNormKernel(t *testing.T) {
	g := opGen(t, 11)
	type shape struct {
		n, c, h, w, groups int64
		mean, scale        float64 // of x
		wScale             float64 // of the affine weight: 100 pushes SiLU's input to the clamp
	}
	shapes := []shape{
		{3, 8, 17, 19, 4, 0, 1, 1},     // 323 pixels: a partial chunk, a tail of 3
		{2, 6, 3, 3, 3, 0, 1, 1},       // 9 values a plane: all tail
		{1, 64, 32, 32, 8, 0, 1, 1},    // the small preset's first level
		{2, 16, 8, 8, 16, 50, 1, 1},    // one channel a group, mean 50
		{2, 8, 16, 16, 1, -3, 0.01, 1}, // one group, mean 300 times the spread
		{2, 8, 5, 5, 2, 0, 1, 100},     // SiLU inputs to +-400
	}
	for _, sh := range shapes {
		for _, layout := range []string{"nchw", "channels-last"} {
			for _, variant := range []string{"plain", "affine", "affine+shift+silu", "shift+silu"} {
				name := fmt.Sprintf("%dx%dx%dx%d/%d groups/mean %g/%s/%s", sh.n, sh.c, sh.h, sh.w, sh.groups, sh.mean, layout, variant)
				t.Run(name, func(t *testing.T) {
					s := opScope(t, Inference)
					x := s.AddScalar(s.MulScalar(s.Randn([]int64{sh.n, sh.c, sh.h, sh.w}, Float32, CPU, g), sh.scale), sh.mean)
					if layout == "channels-last" {
						x = s.ChannelsLast(x)
					}
					var w, b, shift *Tensor
					if strings.Contains(variant, "affine") {
						w = s.MulScalar(s.Randn([]int64{sh.c}, Float32, CPU, g), sh.wScale)
						b = s.Randn([]int64{sh.c}, Float32, CPU, g)
					}
					if strings.Contains(variant, "shift") {
						shift = s.MulScalar(s.Randn([]int64{sh.n, sh.c}, Float32, CPU, g), 3)
					}
					silu := strings.Contains(variant, "silu")
					var got *Tensor
					if silu {
						got = s.GroupNormSiLU(x, shift, sh.groups, w, b, 1e-5)
					} else {
						got = s.GroupNorm(x, sh.groups, w, b, 1e-5)
					}
					want := groupNormRef(s, x, shift, sh.groups, w, b, silu)
					if err := s.Err(); err != nil {
						t.Fatal(err)
					}
					if m, err := got.Meta(); err != nil || m.DType != Float32 || m.Contiguous != (layout == "nchw") {
						t.Errorf("output meta %+v (%v): want float32 in the input's layout", m, err)
					}
					gv, wv := opValues(t, s.Contiguous(got)), opValues(t, s.Contiguous(want))
					// Float32 rounding of values up to |w| times a few, also where the
					// mean is 300 spreads from zero (centred sums).
					tol := 2e-5 * sh.wScale
					for i := range wv {
						if d := math.Abs(gv[i] - wv[i]); !(d <= tol*math.Max(1, math.Abs(wv[i]))) {
							t.Fatalf("element %d: %g, float64 ops give %g (tolerance %g)", i, gv[i], wv[i], tol)
						}
					}
				})
			}
		}
	}
}

// The kernel runs without autograd only: under autograd with inputs that
// need gradients libtorch's ops run (and TestGradientsMatchFiniteDifferences
// checks their gradients), and so they do after SetGroupNormKernel(false);
// the profiler names the kernel when it runs.
func TestGroupNormKernelOnlyWithoutAutograd(t *testing.T) {
	in := opScope(t, NoGrad)
	x := in.ChannelsLast(in.Randn([]int64{2, 8, 8, 8}, Float32, CPU, nil))
	w := in.Randn([]int64{8}, Float32, CPU, nil)
	b := in.Randn([]int64{8}, Float32, CPU, nil)
	for _, c := range []struct {
		mode   Mode
		grad   bool
		off    bool // SetGroupNormKernel(false)
		kernel bool
	}{{Inference, false, false, true}, {NoGrad, false, false, true}, {Grad, false, false, true}, {Grad, true, false, false},
		{Inference, false, true, false}} {
		t.Run(fmt.Sprintf("mode %v grad %v kernel off %v", c.mode, c.grad, c.off), func(t *testing.T) {
			defer SetGroupNormKernel(SetGroupNormKernel(!c.off))
			s := opScope(t, c.mode)
			xi := s.Clone(x)
			if c.grad {
				if err := xi.SetRequiresGrad(true); err != nil {
					t.Fatal(err)
				}
			}
			stats := profileOf(t, func() {
				s.GroupNormSiLU(xi, nil, 4, w, b, 1e-5)
				s.GroupNorm(xi, 4, w, b, 1e-5)
			})
			if err := s.Err(); err != nil {
				t.Fatal(err)
			}
			_, fused := stats["ddpm::group_norm_silu"]
			_, plain := stats["ddpm::group_norm"]
			_, aten := stats["aten::native_group_norm"]
			if fused != c.kernel || plain != c.kernel || aten == c.kernel {
				t.Errorf("profile has the shim's kernels %v, %v and libtorch's GroupNorm %v; want the kernel %v", fused, plain, aten, c.kernel)
			}
		})
	}
}

// A sample's values depend on nothing but the sample: the same within a
// batch of five as alone, on one thread as on two, to the bit (a server's
// requests give the same images whatever shares their forward).
func TestGroupNormKernelBatchIndependent(t *testing.T) {
	in := opScope(t, Inference)
	x := in.ChannelsLast(in.Randn([]int64{5, 32, 24, 24}, Float32, CPU, nil)) // 576 pixels: 3 chunks
	shift := in.Randn([]int64{5, 32}, Float32, CPU, nil)
	w := in.Randn([]int64{32}, Float32, CPU, nil)
	b := in.Randn([]int64{32}, Float32, CPU, nil)
	testImagesAlone(t, nil, func(s *Scope, n int64) *Tensor {
		return s.GroupNormSiLU(s.Narrow(x, 0, 0, n), s.Narrow(shift, 0, 0, n), 8, w, b, 1e-5)
	})
}

// A NaN spreads to its own group only, as in libtorch's GroupNorm; bad
// shapes are clear errors.
func TestGroupNormKernelEdges(t *testing.T) {
	s := opScope(t, Inference)
	vals := make([]float32, 2*4*3*3)
	for i := range vals {
		vals[i] = float32(i%7) - 3
	}
	vals[5] = float32(math.NaN()) // sample 0, channel 0: group 0 of 2
	x := s.ChannelsLast(s.FromFloat32s(vals, 2, 4, 3, 3))
	got, err := s.Contiguous(s.GroupNormSiLU(x, nil, 2, nil, nil, 1e-5)).Float32s()
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range got {
		n, c := i/36, i/9%4
		if isNaN := math.IsNaN(float64(v)); isNaN != (n == 0 && c < 2) {
			t.Errorf("sample %d channel %d: %v; want NaN in sample 0's first group only", n, c, v)
		}
	}

	for _, c := range []struct {
		name, want string
		f          func(s *Scope) *Tensor
	}{
		{"shift of the wrong shape", "shift must be (N, C) = (2, 4)", func(s *Scope) *Tensor {
			return s.GroupNormSiLU(s.Zeros([]int64{2, 4, 3, 3}, Float32, CPU), s.Zeros([]int64{4}, Float32, CPU), 2, nil, nil, 1e-5)
		}},
		{"groups not dividing the channels", "4 channels do not split into 3 groups", func(s *Scope) *Tensor {
			return s.GroupNormSiLU(s.Zeros([]int64{2, 4, 3, 3}, Float32, CPU), nil, 3, nil, nil, 1e-5)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := NewScope(Inference)
			defer s.Close()
			c.f(s)
			if err := s.Err(); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %v; want one saying %q", err, c.want)
			}
		})
	}
}

// Under bf16 autocast a bfloat16 map stays bfloat16 through GroupNormSiLU:
// the kernel reads it and writes the float32 result rounded to bfloat16,
// the same bits as the float32 kernel's output converted (what autocast
// hands the convolution after it); plain GroupNorm still returns float32.
func TestGroupNormKernelBF16(t *testing.T) {
	in := opScope(t, NoGrad)
	for _, layout := range []string{"nchw", "channels-last"} {
		t.Run(layout, func(t *testing.T) {
			x := in.ToDType(in.MulScalar(in.Randn([]int64{3, 16, 17, 19}, Float32, CPU, nil), 3), BFloat16)
			if layout == "channels-last" {
				x = in.ChannelsLast(x)
			}
			shift := in.ToDType(in.Randn([]int64{3, 16}, Float32, CPU, nil), BFloat16)
			w := in.Randn([]int64{16}, Float32, CPU, nil)
			b := in.Randn([]int64{16}, Float32, CPU, nil)
			want := contiguousBytes(t, in, in.ToDType(in.GroupNormSiLU(in.ToDType(x, Float32), in.ToDType(shift, Float32), 4, w, b, 1e-5), BFloat16))
			s, err := NewAutocastScope(Inference, BFloat16)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			y := s.GroupNormSiLU(x, shift, 4, w, b, 1e-5)
			plain := s.GroupNorm(x, 4, w, b, 1e-5)
			if err := s.Err(); err != nil {
				t.Fatal(err)
			}
			if y.DType() != BFloat16 || plain.DType() != Float32 {
				t.Fatalf("GroupNormSiLU gives %v, GroupNorm %v; want bfloat16 and float32", y.DType(), plain.DType())
			}
			if m, err := y.Meta(); err != nil || m.Contiguous != (layout == "nchw") {
				t.Errorf("output meta %+v (%v): want the input's layout", m, err)
			}
			if got := contiguousBytes(t, s, y); !bytes.Equal(got, want) {
				t.Fatal("bfloat16 output differs from the float32 kernel's output rounded to bfloat16")
			}
		})
	}
}
