package diffusion

import (
	"fmt"

	"github.com/ddpm-go/ddpm/internal/enum"
	"github.com/ddpm-go/ddpm/torch"
)

// Target is what the network is trained to predict.
type Target string

// Prediction targets. With a = sqrt(ᾱ_t) and b = sqrt(1-ᾱ_t), x_t = a x0 + b ε:
const (
	// Epsilon is the noise ε (Ho et al. 2020, eq. 14).
	Epsilon Target = "epsilon"
	// X0 is the clean image x0.
	X0 Target = "x0"
	// V is a ε - b x0 (Salimans & Ho 2022), better conditioned at both ends
	// of the schedule.
	V Target = "v"
)

var targets = []Target{Epsilon, X0, V}

// ParseTarget parses a prediction target the enum way: "epsilon" (or
// "eps"), "x0" (or diffusers' "sample") and "v" (or "v-prediction").
func ParseTarget(s string) (Target, error) {
	v, err := enum.Parse("target", s, targets, map[string]Target{"eps": Epsilon, "sample": X0, "v-prediction": V})
	if err != nil {
		return "", fmt.Errorf("diffusion: %w", err)
	}
	return v, nil
}

// Valid reports whether t is one of Epsilon, X0 and V.
func (t Target) Valid() bool { return enum.Valid(t, targets) }

// DiffusersName is the prediction_type of a diffusers scheduler config.
func (t Target) DiffusersName() string {
	switch t {
	case X0:
		return "sample"
	case V:
		return "v_prediction"
	}
	return "epsilon"
}

// Gather picks values[t_i] for every sample i of the int64 timesteps t and
// shapes the result (N, 1, ..., 1) to broadcast over x, in x's dtype and on
// x's device: the one helper that turns a per-timestep schedule coefficient
// into a per-sample tensor.
func Gather(s *torch.Scope, values []float64, t, x *torch.Tensor) *torch.Tensor {
	m, err := x.Meta()
	if err != nil {
		s.Fail(fmt.Errorf("diffusion: gather: %w", err))
		return nil
	}
	table := s.FromFloat64s(values, int64(len(values)))
	if m.Device != torch.CPU {
		table = s.To(table, m.Device)
	}
	shape := make([]int64, len(m.Shape))
	for i := range shape {
		shape[i] = 1
	}
	shape[0] = -1
	return s.ToDType(s.Reshape(s.IndexSelect(table, 0, t), shape...), m.DType)
}

// QSample draws x_t ~ q(x_t | x_0) in closed form:
// x_t = sqrt(ᾱ_t) x0 + sqrt(1-ᾱ_t) ε (Ho et al. 2020, eq. 4).
func (sc *Schedule) QSample(s *torch.Scope, x0, t, eps *torch.Tensor) *torch.Tensor {
	a := Gather(s, sc.sqrtAlphasCumprod, t, x0)
	b := Gather(s, sc.sqrtOneMinusAlphasCumprod, t, x0)
	return s.Add(s.Mul(a, x0), s.Mul(b, eps))
}

// TrainingTarget is what a model of target kind should output for x_t made
// from x0 and eps at timesteps t.
func (sc *Schedule) TrainingTarget(s *torch.Scope, target Target, x0, eps, t *torch.Tensor) *torch.Tensor {
	switch target {
	case Epsilon:
		return eps
	case X0:
		return x0
	case V:
		a := Gather(s, sc.sqrtAlphasCumprod, t, x0)
		b := Gather(s, sc.sqrtOneMinusAlphasCumprod, t, x0)
		return s.Sub(s.Mul(a, eps), s.Mul(b, x0))
	}
	s.Fail(fmt.Errorf("diffusion: unknown target %q (valid: %s)", target, enum.List(targets)))
	return nil
}

// SplitPrediction converts a model output of kind target at x_t into the
// predicted clean image and noise. a = sqrt(ᾱ_t) and b = sqrt(1-ᾱ_t) are
// tensors broadcastable over xt (per-sample from Gather, or one-element when
// all samples share t, as in samplers).
//
//	epsilon: x0 = (x_t - b ε) / a
//	x0:      ε  = (x_t - a x0) / b
//	v:       x0 = a x_t - b v,  ε = b x_t + a v   (since a² + b² = 1)
func SplitPrediction(s *torch.Scope, target Target, out, xt, a, b *torch.Tensor) (x0, eps *torch.Tensor) {
	switch target {
	case Epsilon:
		return s.Div(s.Sub(xt, s.Mul(b, out)), a), out
	case X0:
		return out, s.Div(s.Sub(xt, s.Mul(a, out)), b)
	case V:
		return s.Sub(s.Mul(a, xt), s.Mul(b, out)), s.Add(s.Mul(b, xt), s.Mul(a, out))
	}
	s.Fail(fmt.Errorf("diffusion: unknown target %q (valid: %s)", target, enum.List(targets)))
	return nil, nil
}

// FromPrediction is the inverse of SplitPrediction: the output a model of
// kind target should give for clean image x0 and noise eps (tests use it to
// build exact predictions; the samplers work with x0 and eps directly).
func FromPrediction(s *torch.Scope, target Target, x0, eps, a, b *torch.Tensor) *torch.Tensor {
	switch target {
	case Epsilon:
		return eps
	case X0:
		return x0
	case V:
		return s.Sub(s.Mul(a, eps), s.Mul(b, x0))
	}
	s.Fail(fmt.Errorf("diffusion: unknown target %q (valid: %s)", target, enum.List(targets)))
	return nil
}
