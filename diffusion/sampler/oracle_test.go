package sampler

import (
	"math"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/torch"
)

// The test problem of the samplers: data x_0 ~ N(μ, s² I). Its optimal
// predictors are known in closed form. With a = sqrt(ᾱ_t), b = sqrt(1-ᾱ_t)
// and x_t = a x_0 + b ε, x_t ~ N(a μ, a² s² + b²), and
//
//	ε*(x_t, t)   = b (x_t - a μ) / (ᾱ_t s² + 1 - ᾱ_t),
//	x̂_0*(x_t, t) = μ + a s² (x_t - a μ) / (ᾱ_t s² + 1 - ᾱ_t)   (= E[x_0 | x_t]).
//
// Both are affine in x_t, so every sampler step driven by them is affine in
// x_t plus independent Gaussian noise, and the exact distribution of the
// samplers' output is a Gaussian whose moments the tests below propagate in
// float64.

// sampleOneMinusAlphaBar is 1-ᾱ_t for every t, to full relative precision.
func sampleOneMinusAlphaBar(sc *diffusion.Schedule) []float64 {
	b := sc.SqrtOneMinusAlphasCumprod()
	for i, v := range b {
		b[i] = v * v
	}
	return b
}

// sampleGaussianOracle is the optimal model for x_0 ~ N(mu, s² I): it
// predicts ε*, x̂_0* or the v made from them, as its diffusion.Target says. Labels
// are ignored. It counts its calls.
type sampleGaussianOracle struct {
	sc     *diffusion.Schedule
	mu, s  float64
	target diffusion.Target
	calls  int
}

func (o *sampleGaussianOracle) Forward(s *torch.Scope, x, t, _ *torch.Tensor) *torch.Tensor {
	o.calls++
	a := diffusion.Gather(s, o.sc.SqrtAlphasCumprod(), t, x)
	b := diffusion.Gather(s, o.sc.SqrtOneMinusAlphasCumprod(), t, x)
	abar := diffusion.Gather(s, o.sc.AlphasCumprod(), t, x)
	om := diffusion.Gather(s, sampleOneMinusAlphaBar(o.sc), t, x)
	den := s.Add(s.MulScalar(abar, o.s*o.s), om)    // ᾱ s² + 1 - ᾱ
	d := s.Div(s.Sub(x, s.MulScalar(a, o.mu)), den) // (x - a μ)/(ᾱ s² + 1 - ᾱ)
	eps := s.Mul(b, d)
	x0 := s.AddScalar(s.Mul(s.MulScalar(a, o.s*o.s), d), o.mu)
	return diffusion.FromPrediction(s, o.target, x0, eps, a, b)
}

// sampleMixtureOracle is the optimal class-conditional model for a
// two-class mixture of Gaussians in one dimension (use x of shape
// [N, 1, 1, 1]): class 0 is N(-m, s²), class 1 is N(+m, s²), equally
// likely. Label 2 (and nil labels) is the null label: the unconditional
// mixture, whose exact ε is the posterior-weighted one,
//
//	ε*(x_t) = b (x_t - a m tanh(a m x_t / v)) / v,  v = ᾱ s² + 1 - ᾱ,
//
// since p(class 1 | x_t) - p(class 0 | x_t) = tanh(a m x_t / v).
type sampleMixtureOracle struct {
	sc     *diffusion.Schedule
	m, s   float64
	target diffusion.Target
}

const sampleMixtureNull = 2

func (o *sampleMixtureOracle) Forward(s *torch.Scope, x, t, labels *torch.Tensor) *torch.Tensor {
	a := diffusion.Gather(s, o.sc.SqrtAlphasCumprod(), t, x)
	b := diffusion.Gather(s, o.sc.SqrtOneMinusAlphasCumprod(), t, x)
	abar := diffusion.Gather(s, o.sc.AlphasCumprod(), t, x)
	om := diffusion.Gather(s, sampleOneMinusAlphaBar(o.sc), t, x)
	v := s.Add(s.MulScalar(abar, o.s*o.s), om)
	am := s.MulScalar(a, o.m)
	eps := s.Div(s.Mul(b, s.Sub(x, s.Mul(am, s.Tanh(s.Div(s.Mul(am, x), v))))), v)
	if labels != nil {
		shape := []int64{-1, 1, 1, 1}
		lab := s.Reshape(s.ToDType(labels, x.DType()), shape...)
		muC := s.MulScalar(s.AddScalar(s.MulScalar(lab, 2), -1), o.m) // ∓m
		epsC := s.Div(s.Mul(b, s.Sub(x, s.Mul(a, muC))), v)
		eps = s.Where(s.EqScalar(lab, sampleMixtureNull), eps, epsC)
	}
	x0 := s.Div(s.Sub(x, s.Mul(b, eps)), a)
	return diffusion.FromPrediction(s, o.target, x0, eps, a, b)
}

// sampleAffine gives the oracle's predictions at timestep t as affine maps
// of x_t: x̂_0 = p x_t + q and ε̂ = e1 x_t + e0.
func sampleAffine(sc *diffusion.Schedule, t int, mu, s float64) (p, q, e1, e0 float64) {
	abar := sc.At(t).AlphaCumprod
	a := math.Sqrt(abar)
	om := sampleOneMinusAlphaBar(sc)[t]
	den := abar*s*s + om
	return a * s * s / den, mu * om / den, math.Sqrt(om) / den, -math.Sqrt(om) * a * mu / den
}

// sampleGauss is the mean and variance of a 1-D Gaussian.
type sampleGauss struct{ mean, variance float64 }

func (g sampleGauss) std() float64 { return math.Sqrt(g.variance) }

// sampleExactDDPM propagates N(0, 1) through DDPM ancestral steps over ts,
// written as Algorithm 2 of Ho et al. with the respaced α' = ᾱ_t/ᾱ_prev:
// x' = (x - β'/sqrt(1-ᾱ_t) ε̂)/sqrt(α') + σ z.
func sampleExactDDPM(sc *diffusion.Schedule, ts []int, large bool, mu, s float64) sampleGauss {
	g := sampleGauss{0, 1}
	ac := sc.AlphasCumprod()
	for i, t := range ts {
		prev := 1.0
		if i+1 < len(ts) {
			prev = ac[ts[i+1]]
		}
		alpha := ac[t] / prev
		beta := 1 - alpha
		_, _, e1, e0 := sampleAffine(sc, t, mu, s)
		k := beta / math.Sqrt(1-ac[t])
		A := (1 - k*e1) / math.Sqrt(alpha)
		B := -k * e0 / math.Sqrt(alpha)
		noise := 0.0
		if i+1 < len(ts) {
			noise = beta * (1 - prev) / (1 - ac[t])
			if large {
				noise = beta
			}
		}
		g = sampleGauss{A*g.mean + B, A*A*g.variance + noise}
	}
	return g
}

// sampleExactDDIM propagates N(0, 1) through DDIM steps over ts (Song et
// al., eq. 12 and 16).
func sampleExactDDIM(sc *diffusion.Schedule, ts []int, eta, mu, s float64) sampleGauss {
	g := sampleGauss{0, 1}
	ac := sc.AlphasCumprod()
	for i, t := range ts {
		prev := 1.0
		if i+1 < len(ts) {
			prev = ac[ts[i+1]]
		}
		sigma := eta * math.Sqrt((1-prev)/(1-ac[t])) * math.Sqrt(1-ac[t]/prev)
		c := math.Sqrt(math.Max(1-prev-sigma*sigma, 0))
		p, q, e1, e0 := sampleAffine(sc, t, mu, s)
		A := math.Sqrt(prev)*p + c*e1
		B := math.Sqrt(prev)*q + c*e0
		g = sampleGauss{A*g.mean + B, A*A*g.variance + sigma*sigma}
	}
	return g
}

// sampleExactDPMSolver follows DPM-Solver++(2M) over ts. The solver is
// deterministic, so its output is A x_T + B with x_T ~ N(0, 1); both the
// current x and the previous x̂_0 are tracked as such affine maps of x_T.
func sampleExactDPMSolver(sc *diffusion.Schedule, ts []int, mu, s float64) sampleGauss {
	type affine struct{ a, b float64 } // a x_T + b
	x := affine{1, 0}
	var prevX0 affine
	prevH := 0.0
	ac := sc.AlphasCumprod()
	lambda := func(t int) float64 { return math.Log(math.Sqrt(ac[t])) - math.Log(math.Sqrt(1-ac[t])) }
	for i, t := range ts {
		p, q, _, _ := sampleAffine(sc, t, mu, s)
		x0 := affine{p * x.a, p*x.b + q}
		if i+1 == len(ts) {
			x = x0
			break
		}
		next := ts[i+1]
		h := lambda(next) - lambda(t)
		D := x0
		if i > 0 {
			r := prevH / h
			D = affine{(1+1/(2*r))*x0.a - 1/(2*r)*prevX0.a, (1+1/(2*r))*x0.b - 1/(2*r)*prevX0.b}
		}
		ratio := math.Sqrt(1-ac[next]) / math.Sqrt(1-ac[t])
		c := -math.Sqrt(ac[next]) * (math.Exp(-h) - 1)
		x = affine{ratio*x.a + c*D.a, ratio*x.b + c*D.b}
		prevX0, prevH = x0, h
	}
	return sampleGauss{x.b, x.a * x.a}
}

// sampleMoments is the mean and standard deviation (n-1) of all elements
// of x, computed on the host in float64.
func sampleMoments(t *testing.T, x *torch.Tensor) (mean, std float64) {
	t.Helper()
	s := torch.NewScope(torch.Inference)
	defer s.Close()
	v, err := s.ToDType(x, torch.Float64).Float64s()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range v {
		mean += e
	}
	mean /= float64(len(v))
	for _, e := range v {
		std += (e - mean) * (e - mean)
	}
	return mean, math.Sqrt(std / float64(len(v)-1))
}
