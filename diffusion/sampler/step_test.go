package sampler

import (
	"context"
	"math"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/torch"
)

// Stepping one index at a time, with the model output computed by the
// caller, gives what Sample gives, for every sampler (same generator seed,
// so the same noise), with clipping on.
func TestStepperMatchesSample(t *testing.T) {
	sc := mustSchedule(t, diffusion.ScheduleConfig{T: 100})
	model := func(s *torch.Scope, x *torch.Tensor) *torch.Tensor { return s.MulScalar(s.Sin(x), 0.7) }
	for _, o := range []Options{
		{Sampler: DDPM, Steps: 12, Variance: FixedLarge, Clip: ClipStatic},
		{Sampler: DDIM, Steps: 9, Eta: 0.5, Target: diffusion.V},
		{Sampler: DPMPP2M, Steps: 7, Spacing: diffusion.SpacingTrailing, Clip: ClipDynamic},
	} {
		t.Run(string(o.Sampler), func(t *testing.T) {
			x := sampleNoise(t, 3, 2, 1, 4, 4)
			want, err := Sample(context.Background(), &sampleFuncModel{f: model}, x, sc, sampleGenerator(t, 9), o)
			if err != nil {
				t.Fatal(err)
			}
			defer want.Close()

			st, err := NewStepper(sc, sampleGenerator(t, 9), o)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			if n := len(st.Timesteps()); n != o.Steps {
				t.Fatalf("%d timesteps, want %d", n, o.Steps)
			}
			s := torch.NewScope(torch.Inference)
			defer s.Close()
			cur := x
			for i := range st.Timesteps() {
				next, _, err := st.Step(s, i, cur, model(s, cur), nil)
				if err != nil {
					t.Fatal(err)
				}
				cur = next
			}
			got, w := values(t, cur), values(t, want)
			for k := range w {
				if math.Abs(got[k]-w[k]) > 1e-12*(1+math.Abs(w[k])) {
					t.Fatalf("element %d: stepper %v, Sample %v", k, got[k], w[k])
				}
			}
		})
	}
}

// Explicit noise replaces the generator's draw: a DDPM step given z is the
// step mean plus σ z, and z = 0 gives the mean.
func TestStepperExplicitNoise(t *testing.T) {
	sc := mustSchedule(t, diffusion.ScheduleConfig{T: 50})
	st, err := NewStepper(sc, nil, Options{Sampler: DDPM, Variance: FixedLarge})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s := torch.NewScope(torch.Inference)
	defer s.Close()
	x := sampleNoise(t, 1, 1, 1, 2, 2)
	out := sampleNoise(t, 2, 1, 1, 2, 2)
	z := sampleNoise(t, 4, 1, 1, 2, 2)
	i := 10
	if _, _, err := st.Step(s, i, x, out, nil); err == nil || !strings.Contains(err.Error(), "draws noise") {
		t.Fatalf("a stochastic step without noise or generator: err = %v", err)
	}
	mean, _, err := st.Step(s, i, x, out, s.Zeros(z.Shape(), z.DType(), z.Device()))
	if err != nil {
		t.Fatal(err)
	}
	next, _, err := st.Step(s, i, x, out, z)
	if err != nil {
		t.Fatal(err)
	}
	sigma := math.Sqrt(sc.At(st.Timesteps()[i]).Beta)
	m, n, zz := values(t, mean), values(t, next), values(t, z)
	for k := range m {
		if d := n[k] - (m[k] + sigma*zz[k]); math.Abs(d) > 1e-12 {
			t.Fatalf("element %d: next %v, mean + σz %v", k, n[k], m[k]+sigma*zz[k])
		}
	}
	if _, _, err := st.Step(s, 50, x, out, z); err == nil {
		t.Fatal("index 50 of 50 steps accepted")
	}
	// The last step adds no noise and needs none.
	if _, _, err := st.Step(s, 49, x, out, nil); err != nil {
		t.Fatal(err)
	}
}
