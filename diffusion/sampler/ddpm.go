package sampler

import (
	"math"

	"github.com/ddpm-go/ddpm/torch"
)

// ddpmStepper is ancestral sampling, Algorithm 2 of Ho et al. 2020:
//
//	x_{t-1} = μ_θ(x_t, t) + σ_t z,  z ~ N(0, I),  z = 0 at the last step,
//
// with μ_θ written as the posterior mean of eq. 7 at the predicted x_0,
//
//	μ_θ(x_t, t) = μ̃_t(x_t, x̂_0) = c1 x̂_0 + c2 x_t,
//
// which equals Algorithm 2's (x_t - β_t/sqrt(1-ᾱ_t) ε_θ)/sqrt(α_t) when x̂_0
// is the model's own prediction, and stays right when x̂_0 is clipped.
//
// With fewer than T steps the chain over the visited timesteps τ_i is a
// DDPM with respaced betas β'_i = 1 - ᾱ_{τ_i}/ᾱ_{τ_{i+1}} (Nichol &
// Dhariwal 2021, section 4), and the same formulas apply with β' in place
// of β; over all T steps β' = β.
type ddpmStepper struct{ run *run }

func newDDPMStepper(r *run) stepper { return &ddpmStepper{run: r} }

// ddpmCoefs returns, for the step from timestep t down to timestep prev
// (-1: the clean data), the posterior-mean coefficients of x̂_0 and x_t
// (Ho et al. 2020, eq. 7) and the two variance choices: β̃' (fixed small)
// and β' (fixed large).
func (r *run) ddpmCoefs(t, prev int) (c1, c2, varSmall, varLarge float64) {
	c := r.sc.At(t)
	if prev == t-1 {
		// Consecutive steps: the schedule's own coefficients.
		return c.PosteriorMeanCoef1, c.PosteriorMeanCoef2, c.PosteriorVariance, c.Beta
	}
	abar, abarPrev := c.AlphaCumprod, 1.0
	if prev >= 0 {
		abarPrev = r.sc.At(prev).AlphaCumprod
	}
	om, omPrev := r.oneMinusAlphaBar(t), r.oneMinusAlphaBar(prev)
	alpha := abar / abarPrev                // α' = ᾱ_t/ᾱ_prev
	beta := (abarPrev - abar) / abarPrev    // β' = 1 - α'
	c1 = beta * math.Sqrt(abarPrev) / om    // β' sqrt(ᾱ_prev)/(1-ᾱ_t)
	c2 = omPrev * math.Sqrt(alpha) / om     // (1-ᾱ_prev) sqrt(α')/(1-ᾱ_t)
	return c1, c2, beta * omPrev / om, beta // β̃' = β' (1-ᾱ_prev)/(1-ᾱ_t)
}

func (d *ddpmStepper) step(s *torch.Scope, i int, x, x0, _ *torch.Tensor) *torch.Tensor {
	r := d.run
	c1, c2, varSmall, varLarge := r.ddpmCoefs(r.cfg.timesteps[i], r.nextTimestep(i))
	mean := s.Add(s.MulScalar(x0, c1), s.MulScalar(x, c2))
	if r.last(i) {
		return mean // no noise on the last step (Algorithm 2, line 3)
	}
	variance := varSmall
	if r.cfg.Variance == FixedLarge {
		variance = varLarge
	}
	return s.Add(mean, s.MulScalar(r.noise(s), math.Sqrt(variance)))
}

func (d *ddpmStepper) close() {}
