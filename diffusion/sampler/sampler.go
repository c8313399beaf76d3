// Package sampler draws images from a diffusion model: DDPM ancestral
// sampling, DDIM and DPM-Solver++(2M), with classifier-free guidance and
// x0 clipping. Like k-diffusion's samplers they share one signature,
// Sample(ctx, model, x, schedule, generator, options): the model is an
// argument and never owned, all randomness comes from the generator.
//
// A sampler is one file holding its update rule (a stepper) and one row of
// the algorithms table below; nothing else names it. The package never
// imports training code.
package sampler

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/internal/enum"
	"github.com/ddpm-go/ddpm/torch"
)

// Kind names a sampling algorithm.
type Kind string

const (
	// DDPM is ancestral sampling, Algorithm 2 of Ho et al. 2020 (with
	// respaced betas when it takes fewer than T steps).
	DDPM Kind = "ddpm"
	// DDIM is the DDIM update of Song et al. 2021, eq. 12, with
	// stochasticity η (eq. 16).
	DDIM Kind = "ddim"
	// DPMPP2M is the multistep second-order DPM-Solver++ of Lu et al.
	// 2022 ("DPM-Solver++: Fast Solver for Guided Sampling of Diffusion
	// Probabilistic Models", Algorithm 2).
	DPMPP2M Kind = "dpmpp-2m"
)

// algorithm is one row of the table of samplers.
type algorithm struct {
	kind    Kind
	aliases []string
	// steps is the default step count for a schedule of T steps.
	steps func(T int) int
	// spacing is the default timestep spacing.
	spacing diffusion.Spacing
	// stochastic reports whether a run with these options draws noise.
	stochastic func(o Options) bool
	// stepper makes the update rule of one run.
	stepper func(r *run) stepper
}

// algorithms is the table of samplers, in the order error messages list them.
var algorithms = []algorithm{
	{kind: DDPM, aliases: []string{"ancestral"}, steps: func(T int) int { return T }, spacing: diffusion.SpacingLinspace,
		stochastic: func(o Options) bool { return o.Steps > 1 }, stepper: newDDPMStepper},
	{kind: DDIM, steps: func(T int) int { return min(DefaultDDIMSteps, T) }, spacing: diffusion.SpacingLinspace,
		// With FinalAlphaCumprodAtZero even the last step lands on a noise level.
		stochastic: func(o Options) bool { return o.Eta > 0 && (o.Steps > 1 || o.FinalAlphaCumprodAtZero) }, stepper: newDDIMStepper},
	{kind: DPMPP2M, aliases: []string{"dpmpp2m", "dpm++2m", "dpm++-2m", "dpm-solver++", "dpmsolver++", "dpm-solver++-2m"},
		steps: func(T int) int { return min(DefaultDPMSolverSteps, T) }, spacing: diffusion.SpacingLogSNR,
		stochastic: func(Options) bool { return false }, stepper: newDPMSolverStepper},
}

func kinds() []Kind {
	ks := make([]Kind, len(algorithms))
	for i, a := range algorithms {
		ks[i] = a.kind
	}
	return ks
}

func lookup(k Kind) (algorithm, error) {
	for _, a := range algorithms {
		if a.kind == k {
			return a, nil
		}
	}
	return algorithm{}, fmt.Errorf("sampler: unknown sampler %q (valid: %s)", k, enum.List(kinds()))
}

// DefaultSteps is the number of steps sampler k takes on a schedule of T
// timesteps when Options.Steps is 0: T for DDPM, at most DefaultDDIMSteps
// for DDIM and DefaultDPMSolverSteps for DPM-Solver++(2M).
func DefaultSteps(k Kind, T int) (int, error) {
	a, err := lookup(k)
	if err != nil {
		return 0, err
	}
	return a.steps(T), nil
}

// ParseKind parses a sampler name the enum way. "dpm++2m", "dpmpp2m" and
// "dpm-solver++" name DPMPP2M, "ancestral" names DDPM.
func ParseKind(s string) (Kind, error) {
	aliases := map[string]Kind{}
	for _, a := range algorithms {
		for _, name := range a.aliases {
			aliases[name] = a.kind
		}
	}
	k, err := enum.Parse("sampler", s, kinds(), aliases)
	if err != nil {
		return "", fmt.Errorf("sampler: %w", err)
	}
	return k, nil
}

// Variance is the variance σ_t² of the noise the DDPM sampler adds at each
// step (Ho et al. 2020, section 3.2: both choices give similar results).
type Variance string

const (
	// FixedSmall is σ_t² = β̃_t = β_t (1-ᾱ_{t-1})/(1-ᾱ_t), the variance of
	// the true posterior q(x_{t-1} | x_t, x_0) (eq. 7), optimal when x_0 is
	// a single point.
	FixedSmall Variance = "fixed-small"
	// FixedLarge is σ_t² = β_t, optimal when x_0 ~ N(0, I).
	FixedLarge Variance = "fixed-large"
)

var variances = []Variance{FixedSmall, FixedLarge}

// ParseVariance parses "fixed-small" (or "small", "beta-tilde") and
// "fixed-large" (or "large", "beta") the enum way.
func ParseVariance(s string) (Variance, error) {
	v, err := enum.Parse("variance", s, variances, map[string]Variance{
		"small": FixedSmall, "beta-tilde": FixedSmall, "large": FixedLarge, "beta": FixedLarge})
	if err != nil {
		return "", fmt.Errorf("sampler: %w", err)
	}
	return v, nil
}

// Clip says how a sampler bounds its prediction of x_0 at each step.
type Clip string

const (
	// ClipNone leaves the predicted x_0 alone.
	ClipNone Clip = "none"
	// ClipStatic clamps the predicted x_0 to [-1, 1], the range of the
	// data (Ho et al. 2020, as in their released code; "static
	// thresholding" in Saharia et al. 2022).
	ClipStatic Clip = "clip"
	// ClipDynamic is the dynamic thresholding of Saharia et al. 2022
	// (Imagen, section 2.3): per sample, s is the given percentile of |x_0|,
	// raised to at least 1, and x_0 becomes clamp(x_0, -s, s)/s.
	ClipDynamic Clip = "dynamic"
)

var clips = []Clip{ClipNone, ClipStatic, ClipDynamic}

// ParseClip parses "none" (or "off"), "clip" (or "static") and "dynamic"
// (or "threshold") the enum way.
func ParseClip(s string) (Clip, error) {
	v, err := enum.Parse("clip mode", s, clips, map[string]Clip{"off": ClipNone, "static": ClipStatic, "threshold": ClipDynamic})
	if err != nil {
		return "", fmt.Errorf("sampler: %w", err)
	}
	return v, nil
}

// Default settings of Options.
const (
	// DefaultDDIMSteps is the number of DDIM steps when Steps is 0.
	DefaultDDIMSteps = 50
	// DefaultDPMSolverSteps is the number of DPM-Solver++ steps when Steps
	// is 0: the solver reaches good quality in 10 to 20 model calls.
	DefaultDPMSolverSteps = 20
	// DefaultDynamicPercentile is the percentile of |x_0| that dynamic
	// thresholding scales by (Saharia et al. 2022).
	DefaultDynamicPercentile = 0.995
)

// Options configures Sample. The zero value samples with DDPM over all T
// steps, an epsilon-predicting model, no clipping and no guidance.
type Options struct {
	// Sampler is the algorithm; default DDPM.
	Sampler Kind
	// Steps is the number of sampler steps, which is also the number of
	// model calls, in [1, T]. 0 selects T for DDPM, DefaultDDIMSteps for
	// DDIM and DefaultDPMSolverSteps for DPM-Solver++.
	Steps int
	// Spacing picks the Steps timesteps among the T training timesteps
	// (Schedule.Timesteps). Default SpacingLinspace for DDPM and DDIM,
	// whose first step is the last trained timestep T-1, and SpacingLogSNR
	// (uniform in log SNR, as Lu et al. recommend) for DPM-Solver++.
	// SpacingLeading does not start at T-1 (see its documentation).
	Spacing diffusion.Spacing
	// Eta is DDIM's η in [0, 1] (Song et al. 2021, eq. 16): 0 is the
	// deterministic DDIM, 1 has the variance of DDPM's fixed-small choice.
	// Only DDIM reads it.
	Eta float64
	// Variance is DDPM's σ_t²; default FixedSmall. Only DDPM reads it.
	Variance Variance
	// Target is what the model predicts; default diffusion.Epsilon.
	Target diffusion.Target
	// Clip bounds the predicted x_0 at every step; default ClipNone. The
	// noise prediction is then recomputed from the bounded x_0, so that
	// every sampler moves toward the bounded prediction.
	Clip Clip
	// KeepModelEps, with clipping, leaves the model's own noise
	// prediction in DDIM's direction term instead of recomputing it from
	// the bounded x0, as diffusers' DDIMScheduler does by default
	// (use_clipped_model_output false). Only DDIM reads it: DDPM and
	// DPM-Solver++ step from x0 alone.
	KeepModelEps bool
	// FinalAlphaCumprodAtZero makes DDIM's last step land on ᾱ of
	// timestep 0 instead of ᾱ = 1 (the clean data), so it returns a sample
	// still at the smallest trained noise level rather than the predicted
	// x0: diffusers' DDIMScheduler with set_alpha_to_one false. Only DDIM
	// reads it.
	FinalAlphaCumprodAtZero bool
	// DynamicPercentile is the percentile of ClipDynamic, in (0, 1];
	// default DefaultDynamicPercentile.
	DynamicPercentile float64
	// Guidance is the classifier-free guidance weight w (Ho & Salimans
	// 2022): the noise prediction is
	//
	//	ε = ε(x, t, ∅) + w (ε(x, t, c) - ε(x, t, ∅)),
	//
	// with both branches computed in one model call on a batch of 2N.
	// w = 1 is plain conditional sampling, w > 1 strengthens the class.
	// 0 (unset) and 1 call the model once per step with Labels as they
	// are (conditional sampling, or unconditional when Labels is nil);
	// any other w needs Labels. For purely unconditional samples from a
	// conditional model, pass Labels filled with NullLabel.
	Guidance float64
	// Labels are the class labels c of the samples (int64, N), or nil for
	// an unconditional model. The caller keeps ownership.
	Labels *torch.Tensor
	// NullLabel is the label ∅ of the unconditional branch: the label the
	// trainer substituted when it dropped a sample's class (the model's
	// class count).
	NullLabel int64
	// Callback, if not nil, is called at every step with the step number
	// (0 first) of total, the training timestep t, the sampler's current
	// x_t and its prediction of x_0 (after guidance and clipping), for
	// trajectories and progress. The tensors are valid only during the
	// call: clone them to keep them. An error from the callback stops
	// sampling and is returned, wrapped.
	Callback func(step, total, t int, xt, x0 *torch.Tensor) error
}

// config is a validated Options with its defaults filled in, its
// algorithm and the timesteps the sampler visits, noisiest first.
type config struct {
	Options
	algo      algorithm
	timesteps []int
}

// resolve fills the defaults of o and validates it against a schedule.
func (o Options) resolve(sc *diffusion.Schedule) (config, error) {
	T := sc.T()
	if o.Sampler == "" {
		o.Sampler = DDPM
	}
	algo, err := lookup(o.Sampler)
	if err != nil {
		return config{}, err
	}
	if o.Steps == 0 {
		o.Steps = algo.steps(T)
	}
	if o.Steps < 1 || o.Steps > T {
		return config{}, fmt.Errorf("sampler: steps %d out of range [1, %d]", o.Steps, T)
	}
	if o.Spacing == "" {
		o.Spacing = algo.spacing
	}
	if !(o.Eta >= 0 && o.Eta <= 1) {
		return config{}, fmt.Errorf("sampler: ddim eta %g out of range [0, 1]", o.Eta)
	}
	if o.Variance == "" {
		o.Variance = FixedSmall
	}
	if !enum.Valid(o.Variance, variances) {
		return config{}, fmt.Errorf("sampler: unknown variance %q (valid: %s)", o.Variance, enum.List(variances))
	}
	if o.Target == "" {
		o.Target = diffusion.Epsilon
	}
	if !o.Target.Valid() {
		return config{}, fmt.Errorf("sampler: unknown target %q (valid: epsilon, x0, v)", o.Target)
	}
	if o.Clip == "" {
		o.Clip = ClipNone
	}
	if !enum.Valid(o.Clip, clips) {
		return config{}, fmt.Errorf("sampler: unknown clip mode %q (valid: %s)", o.Clip, enum.List(clips))
	}
	if o.DynamicPercentile == 0 {
		o.DynamicPercentile = DefaultDynamicPercentile
	}
	if !(o.DynamicPercentile > 0 && o.DynamicPercentile <= 1) {
		return config{}, fmt.Errorf("sampler: dynamic thresholding percentile %g out of range (0, 1]", o.DynamicPercentile)
	}
	if math.IsNaN(o.Guidance) || math.IsInf(o.Guidance, 0) || o.Guidance < 0 {
		return config{}, fmt.Errorf("sampler: guidance weight %g must be finite and >= 0", o.Guidance)
	}
	if o.guided() && o.Labels == nil {
		return config{}, errors.New("sampler: guidance needs class labels (the model is unconditional?)")
	}
	ts, err := sc.Timesteps(o.Steps, o.Spacing)
	if err != nil {
		return config{}, err
	}
	if o.Target == diffusion.Epsilon && sc.At(ts[0]).SqrtAlphaCumprod == 0 {
		return config{}, fmt.Errorf("sampler: the first timestep %d has ᾱ = 0 (a zero terminal SNR schedule), where a noise prediction says nothing of x_0 (x_0 = (x - sqrt(1-ᾱ) ε)/sqrt(ᾱ)); such a schedule needs a model predicting v or x0, or a spacing that starts below it (leading)", ts[0])
	}
	return config{Options: o, algo: algo, timesteps: ts}, nil
}

// guided reports whether the model runs both guidance branches.
func (o Options) guided() bool { return o.Guidance != 0 && o.Guidance != 1 }

// stepper is one sampler's update rule. step maps x at timesteps[i] to
// x at timesteps[i+1], or to the clean sample after the last step, given the
// (guided, clipped) predictions x0 and eps at timesteps[i]; it returns a new
// tensor of s. Steppers that carry state across steps keep it outside s and
// free it in close.
type stepper interface {
	step(s *torch.Scope, i int, x, x0, eps *torch.Tensor) *torch.Tensor
	close()
}

// run is the state of one call of Sample.
type run struct {
	cfg     config
	model   diffusion.Model
	sc      *diffusion.Schedule
	gen     *torch.Generator
	shape   []int64
	dtype   torch.DType
	device  torch.Device
	stepper stepper
	// fixedNoise, if not nil, is the z of the current step, given by the
	// caller of Stepper.Step instead of drawn from gen.
	fixedNoise *torch.Tensor
}

// Sample draws samples from a diffusion model by running a sampler from the
// initial noise x = x_T (N, C, H, W, any floating dtype) down to x_0, and
// returns them as a new tensor of x's shape, dtype and device, which the
// caller must Close.
//
// Like the samplers of k-diffusion, every algorithm shares this one
// signature: the model is an argument and never owned, x is not modified,
// all randomness comes from gen (DDPM noise and DDIM with η > 0; gen may be
// nil for the deterministic samplers), and the options pick the algorithm
// (Options). Each step runs in its own inference-mode torch.Scope and
// carries only the next x (and DPM-Solver++'s previous x_0 prediction) to
// the next step, so memory stays flat however many steps run. The update
// arithmetic runs in x's dtype; the schedule's coefficients are float64.
//
// The context is checked before every step; when it is done, Sample returns
// ctx.Err(), wrapped.
func Sample(ctx context.Context, m diffusion.Model, x *torch.Tensor, sc *diffusion.Schedule, gen *torch.Generator, o Options) (*torch.Tensor, error) {
	if m == nil {
		return nil, errors.New("sampler: sample: nil model")
	}
	if sc == nil {
		return nil, errors.New("sampler: sample: nil schedule")
	}
	meta, err := x.Meta()
	if err != nil {
		return nil, fmt.Errorf("sampler: sample: initial noise: %w", err)
	}
	if !meta.DType.IsFloat() {
		return nil, fmt.Errorf("sampler: sample: initial noise is %s, want a floating dtype", meta.DType)
	}
	if len(meta.Shape) == 0 || meta.Shape[0] < 1 {
		return nil, fmt.Errorf("sampler: sample: initial noise of shape %v has no batch dimension", meta.Shape)
	}
	cfg, err := o.resolve(sc)
	if err != nil {
		return nil, err
	}
	if cfg.Labels != nil {
		lm, err := cfg.Labels.Meta()
		if err != nil {
			return nil, fmt.Errorf("sampler: sample: labels: %w", err)
		}
		if lm.DType != torch.Int64 || len(lm.Shape) != 1 || lm.Shape[0] != meta.Shape[0] {
			return nil, fmt.Errorf("sampler: sample: labels are %s %v, want int64 [%d]", lm.DType, lm.Shape, meta.Shape[0])
		}
	}
	if cfg.algo.stochastic(cfg.Options) && gen == nil {
		return nil, fmt.Errorf("sampler: sample: the %s sampler draws noise and needs a generator", cfg.Sampler)
	}
	if err := generatorOn(gen, meta.Device); err != nil {
		return nil, fmt.Errorf("sampler: sample: %w", err)
	}
	r := &run{cfg: cfg, model: m, sc: sc, gen: gen, shape: meta.Shape, dtype: meta.DType, device: meta.Device}
	r.stepper = cfg.algo.stepper(r)
	defer r.stepper.close()

	total := len(cfg.timesteps)
	cur, owned := x, false
	for i := range cfg.timesteps {
		if err := ctx.Err(); err != nil {
			if owned {
				cur.Close()
			}
			return nil, fmt.Errorf("sampler: sampling stopped before step %d of %d: %w", i+1, total, err)
		}
		next, err := r.step(i, cur)
		if owned {
			cur.Close()
		}
		if err != nil {
			return nil, err
		}
		cur, owned = next, true
	}
	return cur, nil
}

// SampleShape is Sample starting from fresh noise x_T ~ N(0, I) of the given
// shape and dtype, drawn from gen on gen's device.
func SampleShape(ctx context.Context, m diffusion.Model, shape []int64, dtype torch.DType, sc *diffusion.Schedule, gen *torch.Generator, o Options) (*torch.Tensor, error) {
	if gen == nil {
		return nil, errors.New("sampler: sample: drawing the initial noise needs a generator")
	}
	s := torch.NewScope(torch.Inference)
	defer s.Close()
	x := s.Randn(shape, dtype, gen.Device(), gen)
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("sampler: sample: initial noise: %w", err)
	}
	return Sample(ctx, m, x, sc, gen, o)
}

// step runs step i in its own scope and returns the next x, which the
// caller owns.
func (r *run) step(i int, x *torch.Tensor) (*torch.Tensor, error) {
	s := torch.NewScope(torch.Inference)
	defer s.Close()
	total, t := len(r.cfg.timesteps), r.cfg.timesteps[i]
	fail := func(what string, err error) error {
		return fmt.Errorf("sampler: %s step %d of %d (t = %d): %s%w", r.cfg.Sampler, i+1, total, t, what, err)
	}
	x0, eps := r.predict(s, x, t)
	if err := s.Err(); err != nil {
		return nil, fail("", err)
	}
	if r.cfg.Callback != nil {
		if err := r.cfg.Callback(i, total, t, x, x0); err != nil {
			return nil, fail("callback: ", err)
		}
	}
	next := r.stepper.step(s, i, x, x0, eps)
	if err := s.Err(); err != nil {
		return nil, fail("", err)
	}
	return s.Keep(next), nil
}

// predict calls the model at timestep t (with guidance if configured) and
// turns its output into the predicted clean sample x0 and noise eps, with
// x0 bounded as Clip says and eps recomputed from the bounded x0
// (x_t = a x0 + b ε, Ho et al. 2020, eq. 4).
func (r *run) predict(s *torch.Scope, x *torch.Tensor, t int) (x0, eps *torch.Tensor) {
	return r.split(s, x, r.forward(s, x, t), t)
}

// split turns the model output out at x and timestep t into x0 and eps, as
// predict describes.
func (r *run) split(s *torch.Scope, x, out *torch.Tensor, t int) (x0, eps *torch.Tensor) {
	a := r.scalar(s, r.sc.At(t).SqrtAlphaCumprod)
	b := r.scalar(s, r.sc.At(t).SqrtOneMinusAlphaCumprod)
	x0, eps = diffusion.SplitPrediction(s, r.cfg.Target, out, x, a, b)
	switch r.cfg.Clip {
	case ClipStatic:
		x0 = s.Clamp(x0, -1, 1)
	case ClipDynamic:
		x0 = dynamicThreshold(s, x0, r.cfg.DynamicPercentile)
	default:
		return x0, eps
	}
	if r.cfg.KeepModelEps {
		return x0, eps
	}
	return x0, s.Div(s.Sub(x, s.Mul(a, x0)), b)
}

// scalar is v as a one-element tensor in the sample's dtype and device.
func (r *run) scalar(s *torch.Scope, v float64) *torch.Tensor {
	return s.Full([]int64{1}, v, r.dtype, r.device)
}

// noise draws z ~ N(0, I) of the sample's shape from the run's generator,
// or returns the caller's noise of the current step (Stepper.Step).
func (r *run) noise(s *torch.Scope) *torch.Tensor {
	if r.fixedNoise != nil {
		return r.fixedNoise
	}
	if r.gen == nil {
		// libtorch's global generator would make the run unrepeatable.
		s.Fail(errors.New("the step draws noise: pass noise or give the sampler a generator"))
		return nil
	}
	return s.Randn(r.shape, r.dtype, r.device, r.gen)
}

// last reports whether step i is the final step, the one that lands on the
// clean sample (ᾱ = 1).
func (r *run) last(i int) bool { return i == len(r.cfg.timesteps)-1 }

// oneMinusAlphaBar is 1-ᾱ at timestep t, to full relative precision near
// t = 0 (where ᾱ ≈ 1), or 0 for t = -1 (the clean data).
func (r *run) oneMinusAlphaBar(t int) float64 {
	if t < 0 {
		return 0
	}
	v := r.sc.At(t).SqrtOneMinusAlphaCumprod
	return v * v
}

// nextTimestep is timesteps[i+1], or -1 (the clean data) after the last step.
func (r *run) nextTimestep(i int) int {
	if r.last(i) {
		return -1
	}
	return r.cfg.timesteps[i+1]
}

// generatorOn reports a generator (if any) of another device than the
// samples': libtorch draws only from a generator of the tensor's device.
func generatorOn(gen *torch.Generator, dev torch.Device) error {
	if gen != nil && gen.Device().Type != dev.Type {
		return fmt.Errorf("the generator is on %s, the samples on %s", gen.Device(), dev)
	}
	return nil
}
