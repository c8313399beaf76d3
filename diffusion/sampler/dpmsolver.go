package sampler

import (
	"fmt"
	"math"

	"github.com/ddpm-go/ddpm/torch"
)

// dpmSolverStepper is DPM-Solver++(2M), the multistep second-order solver
// of Lu et al. 2022 ("DPM-Solver++: Fast Solver for Guided Sampling of
// Diffusion Probabilistic Models", Algorithm 2), which integrates the
// diffusion ODE in its data-prediction form. With α_t = sqrt(ᾱ_t),
// σ_t = sqrt(1-ᾱ_t) and the half log SNR λ_t = log(α_t/σ_t), the step from
// t_{i-1} to t_i, h_i = λ_{t_i} - λ_{t_{i-1}}, is
//
//	x_{t_i} = (σ_{t_i}/σ_{t_{i-1}}) x_{t_{i-1}} - α_{t_i} (e^{-h_i} - 1) D_i,
//	D_i = (1 + 1/(2 r_i)) x̂_0(t_{i-1}) - 1/(2 r_i) x̂_0(t_{i-2}),  r_i = h_{i-1}/h_i,
//
// with D_1 = x̂_0(t_0) on the first step (first order: DDIM with η = 0).
// The last step lands on the clean data, where σ = 0 and h = ∞; it is taken
// in first order, as k-diffusion does, and so returns the last x̂_0. Each
// step costs one model call.
type dpmSolverStepper struct {
	run *run
	// prevX0 is x̂_0 of the previous step, kept outside the step scopes.
	prevX0 *torch.Tensor
	// prevH is the previous step's h (0 before the first step).
	prevH float64
	// next is the step expected next.
	next int
}

func newDPMSolverStepper(r *run) stepper { return &dpmSolverStepper{run: r} }

// halfLogSNR is λ_t = log(α_t/σ_t) = logSNR_t / 2.
func (r *run) halfLogSNR(t int) float64 { return r.sc.At(t).LogSNR / 2 }

func (d *dpmSolverStepper) step(s *torch.Scope, i int, x, x0, _ *torch.Tensor) *torch.Tensor {
	r := d.run
	// The multistep state belongs to one pass over the timesteps, in order:
	// a new pass (a Stepper reused) starts afresh, and a step out of order
	// would pair this x̂_0 with another step's.
	switch {
	case i == 0:
		d.prevX0.Close()
		d.prevX0, d.prevH = nil, 0
	case i != d.next:
		s.Fail(fmt.Errorf("DPM-Solver++ steps in order: step %d given, step %d expected", i+1, d.next+1))
		return nil
	}
	d.next = i + 1
	if r.last(i) {
		// σ_next = 0, e^{-h} = 0: x_0 = D = x̂_0 in first order.
		return x0
	}
	t, next := r.cfg.timesteps[i], r.cfg.timesteps[i+1]
	h := r.halfLogSNR(next) - r.halfLogSNR(t)
	sigmaRatio := math.Sqrt(r.oneMinusAlphaBar(next) / r.oneMinusAlphaBar(t))
	cD := -r.sc.At(next).SqrtAlphaCumprod * math.Expm1(-h) // -α_next (e^{-h} - 1)
	D := x0
	if d.prevX0 != nil {
		k := h / (2 * d.prevH) // 1/(2r) with r = h_{i-1}/h_i
		D = s.Sub(s.MulScalar(x0, 1+k), s.MulScalar(d.prevX0, k))
	}
	out := s.Add(s.MulScalar(x, sigmaRatio), s.MulScalar(D, cD))
	if s.Err() != nil {
		return nil
	}
	d.prevX0.Close()
	// A copy: x0 may be the caller's model output itself (an x0-predicting
	// model without clipping), which the caller keeps using.
	d.prevX0, d.prevH = s.Keep(s.Clone(x0)), h
	return out
}

func (d *dpmSolverStepper) close() {
	d.prevX0.Close()
	d.prevX0 = nil
}
