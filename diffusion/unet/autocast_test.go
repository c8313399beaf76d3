package unet

import (
	"math"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/torch"
)

// norm is ||a||.
func norm(a []float32) float64 {
	var n float64
	for _, v := range a {
		n += float64(v) * float64(v)
	}
	return math.Sqrt(n)
}

// relL2 is ||a-b|| / ||b||.
func relL2(a, b []float32) float64 {
	var d, n float64
	for i := range b {
		e := float64(a[i]) - float64(b[i])
		d += e * e
		n += float64(b[i]) * float64(b[i])
	}
	return math.Sqrt(d / n)
}

// forwardBackward runs one forward of u and the backward of the mean squared
// output in s, and returns the output and every parameter's gradient.
func forwardBackward(t *testing.T, s *torch.Scope, u *UNet, x, tt *torch.Tensor) (out []float32, grads [][]float32) {
	t.Helper()
	y := u.Forward(s, x, tt, nil)
	if y != nil && y.DType() != torch.Float32 {
		t.Fatalf("output is %s, want float32", y.DType())
	}
	s.Backward(s.Mean(s.Square(y), nil, false))
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	out = floats(t, y)
	for _, p := range u.Params() {
		g := s.Grad(p.T)
		if g == nil || g.DType() != torch.Float32 {
			t.Fatalf("%s: gradient %v", p.Name, g)
		}
		grads = append(grads, floats(t, g))
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	return out, grads
}

// Under bfloat16 autocast the real presets (GroupNorm, attention, skips)
// compute what float32 computes, to bfloat16's precision, forward and
// backward, with float32 outputs and gradients and nothing left behind.
//
// bfloat16 keeps 8 significant bits (unit roundoff 2^-9 = 0.2%), and every
// convolution and linear layer rounds its inputs and weights to it, so each
// of the ~20 layers on the longest path adds ~0.3% of independent error:
// about 0.3% x sqrt(20) = 1.3% at the output. Measured over five seeds
// (relative L2 error): output 0.7-1.4%, whole gradient 0.5-1.4%, the worst
// single tensor 2-5% (small tensors such as a GroupNorm weight or a q
// bias, whose gradient sums many cancelling terms). The bounds are 3%, 3%
// and 15%. The lower bound shows the low precision really ran: float32
// agrees with itself to 1e-6.
func TestBF16MatchesFloat32(t *testing.T) {
	for _, name := range []string{"tiny", "small"} {
		t.Run(name, func(t *testing.T) {
			c := preset(t, name)
			u := newModel(t, c, 1)
			gen := newGen(t, 2)
			perturb(t, u, gen, 0.05)
			in := torch.NewScope(torch.NoGrad)
			defer in.Close()
			x, tt, _ := randomInputs(in, c, 2, gen)

			ref := torch.NewScope(torch.Grad)
			out32, grads32 := forwardBackward(t, ref, u, x, tt)
			ref.Close()
			for _, p := range u.Params() {
				if err := p.T.ZeroGrad(); err != nil {
					t.Fatal(err)
				}
			}
			live := torch.LiveTensors()
			ac, err := torch.NewAutocastScope(torch.Grad, torch.BFloat16)
			if err != nil {
				t.Fatal(err)
			}
			out16, grads16 := forwardBackward(t, ac, u, x, tt)
			ac.Close()
			for _, p := range u.Params() {
				if err := p.T.ZeroGrad(); err != nil {
					t.Fatal(err)
				}
			}
			if d := torch.LiveTensors() - live; d != 0 {
				t.Errorf("%d tensors left behind by the autocast pass", d)
			}

			outErr := relL2(out16, out32)
			var all16, all32, kBias []float32
			worst, worstName := 0.0, ""
			for i, p := range u.Params() {
				all16, all32 = append(all16, grads16[i]...), append(all32, grads32[i]...)
				if strings.HasSuffix(p.Name, ".k.bias") {
					kBias = append(kBias, grads16[i]...)
					continue
				}
				if e := relL2(grads16[i], grads32[i]); e > worst {
					worst, worstName = e, p.Name
				}
			}
			gradErr := relL2(all16, all32)
			// The key bias shifts every score of a query by the same amount,
			// which softmax ignores: its exact gradient is zero, and both
			// precisions return rounding noise for it.
			if r := norm(kBias) / norm(all32); !(r < 1e-3) {
				t.Errorf("key bias gradients are %g of the whole gradient, want about 0", r)
			}
			t.Logf("%s: relative L2 error of bf16 vs float32: output %.4f, gradient %.4f, worst tensor %.4f (%s)",
				name, outErr, gradErr, worst, worstName)
			if !(outErr < 0.03) || !(gradErr < 0.03) || !(worst < 0.15) {
				t.Errorf("bf16 differs from float32 too much: output %g (bound 0.03), gradient %g (0.03), %s %g (0.15)",
					outErr, gradErr, worstName, worst)
			}
			if outErr < 1e-4 {
				t.Errorf("bf16 output matches float32 to %g: autocast did not run in bf16", outErr)
			}
			for _, p := range u.Params() {
				if p.T.DType() != torch.Float32 {
					t.Errorf("%s became %s", p.Name, p.T.DType())
				}
			}
		})
	}
}
