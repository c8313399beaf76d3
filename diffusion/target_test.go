package diffusion

import (
	"math"
	"testing"

	"github.com/ddpm-go/ddpm/torch"
)

func values(t *testing.T, x *torch.Tensor) []float64 {
	t.Helper()
	v, err := x.Float64s()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// QSample follows eq. 4 per sample, with each sample's own timestep.
func TestQSampleClosedForm(t *testing.T) {
	sc := mustSchedule(t, ScheduleConfig{Kind: Cosine})
	s := torch.NewScope(torch.NoGrad)
	defer s.Close()
	x0 := []float64{0.5, -0.25, 1, 0.75}
	eps := []float64{1, 2, -1, 0.5}
	steps := []int64{0, 999}
	xt := values(t, sc.QSample(s, s.FromFloat64s(x0, 2, 1, 1, 2), s.FromInt64s(steps, 2), s.FromFloat64s(eps, 2, 1, 1, 2)))
	ab := sc.AlphasCumprod()
	for i := range x0 {
		a := ab[steps[i/2]]
		want := math.Sqrt(a)*x0[i] + math.Sqrt(1-a)*eps[i]
		if math.Abs(xt[i]-want) > 1e-12 {
			t.Errorf("x_t[%d] = %.15g, want %.15g", i, xt[i], want)
		}
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
}

// Every target converts back to the (x0, ε) it was made from.
func TestTargetsRoundTrip(t *testing.T) {
	sc := mustSchedule(t, ScheduleConfig{Kind: Linear})
	for _, target := range []Target{Epsilon, X0, V} {
		t.Run(string(target), func(t *testing.T) {
			s := torch.NewScope(torch.NoGrad)
			defer s.Close()
			g, _ := torch.NewGenerator(1, torch.CPU)
			defer g.Close()
			shape := []int64{5, 1, 2, 2}
			x0 := s.Randn(shape, torch.Float64, torch.CPU, g)
			eps := s.Randn(shape, torch.Float64, torch.CPU, g)
			steps := s.FromInt64s([]int64{0, 10, 500, 900, 999}, 5)
			xt := sc.QSample(s, x0, steps, eps)
			out := sc.TrainingTarget(s, target, x0, eps, steps)
			a := Gather(s, sc.SqrtAlphasCumprod(), steps, x0)
			b := Gather(s, sc.SqrtOneMinusAlphasCumprod(), steps, x0)
			gotX0, gotEps := SplitPrediction(s, target, out, xt, a, b)
			back := FromPrediction(s, target, gotX0, gotEps, a, b)
			for name, pair := range map[string][2]*torch.Tensor{"x0": {gotX0, x0}, "eps": {gotEps, eps}, "output": {back, out}} {
				got, want := values(t, pair[0]), values(t, pair[1])
				for i := range want {
					if d := math.Abs(got[i] - want[i]); d > 1e-6 {
						t.Fatalf("%s[%d]: %g vs %g", name, i, got[i], want[i])
					}
				}
			}
			if err := s.Err(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestParseTarget(t *testing.T) {
	for in, want := range map[string]Target{"eps": Epsilon, "epsilon": Epsilon, "x0": X0, "V": V} {
		if got, err := ParseTarget(in); err != nil || got != want {
			t.Errorf("ParseTarget(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := ParseTarget("noise"); err == nil {
		t.Error("ParseTarget accepted an unknown target")
	}
}
