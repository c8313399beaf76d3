package sampler

import (
	"math"

	"github.com/ddpm-go/ddpm/torch"
)

// ddimStepper is the generalized sampling step of Song et al. 2021
// ("Denoising Diffusion Implicit Models"), eq. 12, from timestep t to the
// next visited timestep (ᾱ_prev = 1 after the last step, which therefore
// returns x̂_0):
//
//	x_prev = sqrt(ᾱ_prev) x̂_0 + sqrt(1 - ᾱ_prev - σ²) ε̂ + σ z,
//	σ = η sqrt((1-ᾱ_prev)/(1-ᾱ_t)) sqrt(1 - ᾱ_t/ᾱ_prev)      (eq. 16).
//
// η = 0 is the deterministic DDIM; η = 1 makes σ² the posterior variance
// β̃' of a DDPM over the same timesteps.
type ddimStepper struct{ run *run }

func newDDIMStepper(r *run) stepper { return &ddimStepper{run: r} }

// ddimCoefs returns the coefficients of x̂_0, ε̂ and z in eq. 12 for the
// step from timestep t to timestep prev (-1: the clean data).
func (r *run) ddimCoefs(t, prev int, eta float64) (cx0, ceps, sigma float64) {
	if prev < 0 && r.cfg.FinalAlphaCumprodAtZero {
		prev = 0 // land on timestep 0's noise level, not on the clean data
	}
	abar, abarPrev := r.sc.At(t).AlphaCumprod, 1.0
	if prev >= 0 {
		abarPrev = r.sc.At(prev).AlphaCumprod
	}
	om, omPrev := r.oneMinusAlphaBar(t), r.oneMinusAlphaBar(prev)
	beta := (abarPrev - abar) / abarPrev // 1 - ᾱ_t/ᾱ_prev
	sigma = eta * math.Sqrt(omPrev/om*beta)
	// 1 - ᾱ_prev - σ² can round a hair below 0 when η = 1 and ᾱ_prev ≈ 1.
	return math.Sqrt(abarPrev), math.Sqrt(math.Max(omPrev-sigma*sigma, 0)), sigma
}

func (d *ddimStepper) step(s *torch.Scope, i int, x, x0, eps *torch.Tensor) *torch.Tensor {
	r := d.run
	cx0, ceps, sigma := r.ddimCoefs(r.cfg.timesteps[i], r.nextTimestep(i), r.cfg.Eta)
	next := s.Add(s.MulScalar(x0, cx0), s.MulScalar(eps, ceps))
	if sigma == 0 {
		return next
	}
	return s.Add(next, s.MulScalar(r.noise(s), sigma))
}

func (d *ddimStepper) close() {}
