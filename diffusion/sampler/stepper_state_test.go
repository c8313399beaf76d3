package sampler

import (
	"context"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/torch"
)

// A DPM-Solver++ Stepper used for a second pass starts afresh (the first
// pass's last x̂_0 and h once made its first step a second-order one), and a
// step out of order is an error.
func TestDPMSolverStepperPasses(t *testing.T) {
	sc := mustSchedule(t, diffusion.ScheduleConfig{T: 100})
	model := func(s *torch.Scope, x *torch.Tensor) *torch.Tensor { return s.MulScalar(s.Sin(x), 0.7) }
	st, err := NewStepper(sc, nil, Options{Sampler: DPMPP2M, Steps: 6})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s := torch.NewScope(torch.Inference)
	defer s.Close()
	x := sampleNoise(t, 3, 2, 1, 4, 4)
	pass := func() []float64 {
		cur := x
		for i := range st.Timesteps() {
			next, _, err := st.Step(s, i, cur, model(s, cur), nil)
			if err != nil {
				t.Fatal(err)
			}
			cur = next
		}
		return values(t, cur)
	}
	first, second := pass(), pass()
	for k := range first {
		if first[k] != second[k] {
			t.Fatalf("element %d: %v in the first pass, %v in the second", k, first[k], second[k])
		}
	}
	if _, _, err := st.Step(s, 0, x, model(s, x), nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.Step(s, 2, x, model(s, x), nil); err == nil || !strings.Contains(err.Error(), "step 3 given, step 2 expected") {
		t.Errorf("a step out of order: %v", err)
	}
}

// With an x0-predicting model and no clipping, x̂_0 is the caller's model
// output itself; the multistep state keeps a copy, so the caller's tensor
// lives on after the next step.
func TestDPMSolverKeepsACopyOfTheOutput(t *testing.T) {
	sc := mustSchedule(t, diffusion.ScheduleConfig{T: 100})
	st, err := NewStepper(sc, nil, Options{Sampler: DPMPP2M, Steps: 4, Target: diffusion.X0})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s := torch.NewScope(torch.Inference)
	defer s.Close()
	x := sampleNoise(t, 3, 2, 1, 4, 4)
	out0 := s.MulScalar(x, 0.5)
	next, _, err := st.Step(s, 0, x, out0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.Step(s, 1, next, s.MulScalar(next, 0.5), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := out0.Bytes(); err != nil {
		t.Errorf("the caller's model output of step 1 was freed by step 2: %v", err)
	}
}

// DDIM with η > 0 landing on timestep 0's noise level draws noise even on
// its last step: without a generator (or given noise) that is an error,
// never a draw from libtorch's global generator.
func TestDDIMFinalNoiseNeedsAGenerator(t *testing.T) {
	sc := mustSchedule(t, diffusion.ScheduleConfig{T: 100})
	o := Options{Sampler: DDIM, Steps: 1, Eta: 1, FinalAlphaCumprodAtZero: true}
	x := sampleNoise(t, 3, 2, 1, 4, 4)
	m := &sampleFuncModel{f: func(s *torch.Scope, x *torch.Tensor) *torch.Tensor { return s.MulScalar(x, 0.1) }}
	if _, err := Sample(context.Background(), m, x, sc, nil, o); err == nil || !strings.Contains(err.Error(), "generator") {
		t.Errorf("Sample without a generator: %v", err)
	}
	o.Steps, o.Spacing = 10, diffusion.SpacingTrailing
	st, err := NewStepper(sc, nil, o)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	last := len(st.Timesteps()) - 1
	s := torch.NewScope(torch.Inference)
	if _, _, err := st.Step(s, last, x, s.MulScalar(x, 0.1), nil); err == nil || !strings.Contains(err.Error(), "draws noise") {
		t.Errorf("the last step (t = %d) without noise or a generator: %v", st.Timesteps()[last], err)
	}
	s.Close()
	s = torch.NewScope(torch.Inference)
	defer s.Close()
	if _, _, err := st.Step(s, last, x, s.MulScalar(x, 0.1), s.Randn(x.Shape(), torch.Float64, torch.CPU, sampleGenerator(t, 1))); err != nil {
		t.Errorf("the last step given noise: %v", err)
	}
}

// A zero terminal SNR schedule (ᾱ = 0 at T-1) gives an epsilon-predicting
// model no x_0 at its first step: refused, naming the remedies, where v, x0
// and a spacing that starts below T-1 are fine.
func TestZeroTerminalSNRNeedsAnotherTarget(t *testing.T) {
	sc := mustSchedule(t, diffusion.ScheduleConfig{T: 100, ZeroTerminalSNR: true})
	if _, err := NewStepper(sc, nil, Options{Sampler: DDIM, Steps: 10}); err == nil || !strings.Contains(err.Error(), "needs a model predicting v or x0") {
		t.Errorf("epsilon from ᾱ = 0: %v", err)
	}
	for _, o := range []Options{
		{Sampler: DDIM, Steps: 10, Target: diffusion.V},
		{Sampler: DPMPP2M, Steps: 10, Target: diffusion.X0},
		{Sampler: DDIM, Steps: 10, Spacing: diffusion.SpacingLeading},
	} {
		st, err := NewStepper(sc, nil, o)
		if err != nil {
			t.Errorf("%+v: %v", o, err)
			continue
		}
		st.Close()
	}
}
