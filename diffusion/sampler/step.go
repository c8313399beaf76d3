package sampler

import (
	"errors"
	"fmt"
	"slices"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/torch"
)

// Stepper runs a sampler one step at a time, with the model output supplied
// by the caller: the per-step form of Sample, as a diffusers scheduler's
// step(model_output, t, sample) is the per-step form of its pipeline. It
// runs the same update rules as Sample, so Step over every index in order,
// fed with the outputs Sample's model would give, reproduces Sample.
//
// Step must be called with i = 0, 1, ... in order when the sampler keeps
// state across steps (DPM-Solver++ keeps the previous x_0 prediction); DDPM
// and DDIM are stateless and take any index. A Stepper is not safe for
// concurrent use. Close frees its state.
type Stepper struct {
	r *run
}

// NewStepper resolves o against the schedule as Sample does. Guidance,
// Labels, NullLabel and Callback are ignored: the caller computes the
// (guided) model output itself. gen supplies the noise of stochastic steps
// that Step is given none for; it may be nil when every such step gets
// explicit noise.
func NewStepper(sc *diffusion.Schedule, gen *torch.Generator, o Options) (*Stepper, error) {
	if sc == nil {
		return nil, errors.New("sampler: stepper: nil schedule")
	}
	o.Guidance, o.Labels, o.NullLabel, o.Callback = 0, nil, 0, nil
	cfg, err := o.resolve(sc)
	if err != nil {
		return nil, err
	}
	r := &run{cfg: cfg, sc: sc, gen: gen}
	r.stepper = cfg.algo.stepper(r)
	return &Stepper{r: r}, nil
}

// Timesteps returns the training timesteps the sampler visits, noisiest
// first; step i runs at Timesteps()[i].
func (st *Stepper) Timesteps() []int { return slices.Clone(st.r.cfg.timesteps) }

// Options returns the resolved options: every default filled in.
func (st *Stepper) Options() Options { return st.r.cfg.Options }

// Step advances x (N, C, H, W, floating) at Timesteps()[i] by one step,
// given the model output out at (x, Timesteps()[i]) in the terms of
// Options().Target. It returns the next x (the clean sample after the last
// step) and the predicted x_0 (after clipping), both new tensors of s.
//
// noise is the z ~ N(0, I) of a stochastic step (DDPM before the last step,
// DDIM with η > 0), of x's shape; if it is nil such a step draws it from the
// Stepper's generator. Deterministic steps ignore it.
func (st *Stepper) Step(s *torch.Scope, i int, x, out, noise *torch.Tensor) (next, x0 *torch.Tensor, err error) {
	r := st.r
	total := len(r.cfg.timesteps)
	if i < 0 || i >= total {
		return nil, nil, fmt.Errorf("sampler: %s step index %d out of range [0, %d)", r.cfg.Sampler, i, total)
	}
	t := r.cfg.timesteps[i]
	fail := func(err error) error {
		return fmt.Errorf("sampler: %s step %d of %d (t = %d): %w", r.cfg.Sampler, i+1, total, t, err)
	}
	meta, err := x.Meta()
	if err != nil {
		return nil, nil, fail(err)
	}
	if !meta.DType.IsFloat() || len(meta.Shape) == 0 {
		return nil, nil, fail(fmt.Errorf("x is %s %v, want a floating batch", meta.DType, meta.Shape))
	}
	r.shape, r.dtype, r.device = meta.Shape, meta.DType, meta.Device
	if err := generatorOn(r.gen, meta.Device); err != nil {
		return nil, nil, fail(err)
	}
	if noise == nil && r.gen == nil && r.cfg.algo.stochastic(r.cfg.Options) && !r.last(i) {
		return nil, nil, fail(errors.New("the step draws noise: pass noise or give the stepper a generator"))
	}
	if noise != nil {
		nm, err := noise.Meta()
		if err != nil {
			return nil, nil, fail(fmt.Errorf("noise: %w", err))
		}
		if !slices.Equal(nm.Shape, meta.Shape) || nm.DType != meta.DType {
			return nil, nil, fail(fmt.Errorf("noise is %s %v, want %s %v like x", nm.DType, nm.Shape, meta.DType, meta.Shape))
		}
	}
	r.fixedNoise = noise
	defer func() { r.fixedNoise = nil }()
	x0, eps := r.split(s, x, r.checkOutput(s, out, x, meta.Shape), t)
	if err := s.Err(); err != nil {
		return nil, nil, fail(err)
	}
	next = r.stepper.step(s, i, x, x0, eps)
	if err := s.Err(); err != nil {
		return nil, nil, fail(err)
	}
	return next, x0, nil
}

// Close frees the state the sampler carries between steps; it is safe to
// call twice.
func (st *Stepper) Close() {
	if st.r.stepper != nil {
		st.r.stepper.close()
	}
}
