package optim

import (
	"fmt"
	"math"

	"github.com/ddpm-go/ddpm/diffusion/nn"
	"github.com/ddpm-go/ddpm/internal/enum"
	"github.com/ddpm-go/ddpm/torch"
)

// AdamWConfig holds the optimizer's hyper-parameters. Zero values take the
// defaults in brackets: Adam at 2e-4 as in Ho et al. 2020 (who warm up over
// 5000 steps; the default here is 500, which suits the short CPU runs this
// package is mostly used for), decoupled weight decay off, and the learning
// rate flat after the warm-up.
type AdamWConfig struct {
	LR          float64 `json:"lr"`           // peak learning rate [2e-4]
	Beta1       float64 `json:"beta1"`        // [0.9]
	Beta2       float64 `json:"beta2"`        // [0.999]
	Eps         float64 `json:"eps"`          // [1e-8]
	WeightDecay float64 `json:"weight_decay"` // decoupled, as in AdamW [0]
	WarmupSteps int64   `json:"warmup_steps"` // linear warm-up from 0; < 0: none [500]
	// Decay is the learning rate's course after the warm-up: flat, or down to
	// 0 at step DecaySteps along a half cosine or a line (diffusers'
	// get_scheduler "cosine" and "linear"). [constant]
	Decay      LRDecay `json:"decay,omitempty"`
	DecaySteps int64   `json:"decay_steps,omitempty"` // where a decay reaches 0; the trainer sets its step count
	// PerTensor runs a per-tensor loop instead of libtorch's multi-tensor
	// kernels (see BenchmarkAdamW). Not part of the saved configuration.
	PerTensor bool `json:"-"`
}

// LRDecay is how the learning rate falls after the warm-up.
type LRDecay string

// Learning-rate decays.
const (
	ConstantLR LRDecay = "constant"
	CosineLR   LRDecay = "cosine"
	LinearLR   LRDecay = "linear"
)

var lrDecays = []LRDecay{ConstantLR, CosineLR, LinearLR}

// ParseLRDecay parses "constant", "cosine" or "linear".
func ParseLRDecay(s string) (LRDecay, error) {
	v, err := enum.Parse("learning-rate decay", s, lrDecays, map[string]LRDecay{"flat": ConstantLR})
	if err != nil {
		return "", fmt.Errorf("optim: %w", err)
	}
	return v, nil
}

// DefaultLR is the learning rate of a zero AdamWConfig.LR.
const DefaultLR = 2e-4

// DefaultWarmupSteps is the warm-up of a zero AdamWConfig.WarmupSteps.
const DefaultWarmupSteps = 500

// WithDefaults returns c with every zero field set to its default.
func (c AdamWConfig) WithDefaults() AdamWConfig {
	if c.LR == 0 {
		c.LR = DefaultLR
	}
	if c.Beta1 == 0 {
		c.Beta1 = 0.9
	}
	if c.Beta2 == 0 {
		c.Beta2 = 0.999
	}
	if c.Eps == 0 {
		c.Eps = 1e-8
	}
	if c.WarmupSteps == 0 {
		c.WarmupSteps = DefaultWarmupSteps
	}
	if c.Decay == "" {
		c.Decay = ConstantLR
	}
	return c
}

// Validate reports the first out-of-range hyper-parameter.
func (c AdamWConfig) Validate() error {
	c = c.WithDefaults()
	switch {
	case !(c.LR > 0) || math.IsInf(c.LR, 0):
		return fmt.Errorf("optim: learning rate %g must be positive", c.LR)
	case !(c.Beta1 >= 0 && c.Beta1 < 1):
		return fmt.Errorf("optim: beta1 %g out of range [0, 1)", c.Beta1)
	case !(c.Beta2 >= 0 && c.Beta2 < 1):
		return fmt.Errorf("optim: beta2 %g out of range [0, 1)", c.Beta2)
	case !(c.Eps > 0):
		return fmt.Errorf("optim: eps %g must be positive", c.Eps)
	case !(c.WeightDecay >= 0):
		return fmt.Errorf("optim: weight decay %g must be non-negative", c.WeightDecay)
	case !enum.Valid(c.Decay, lrDecays):
		return fmt.Errorf("optim: unknown learning-rate decay %q (valid: %s)", c.Decay, enum.List(lrDecays))
	case c.Decay != ConstantLR && c.DecaySteps < 1:
		return fmt.Errorf("optim: a %s decay needs its end step (decay steps %d)", c.Decay, c.DecaySteps)
	}
	return nil
}

// AdamW is the Adam optimizer with decoupled weight decay (Loshchilov &
// Hutter 2019), matching torch.optim.AdamW step for step, with a linear
// learning-rate warm-up.
type AdamW struct {
	cfg      AdamWConfig
	params   []nn.Param
	expAvg   []*torch.Tensor
	expAvgSq []*torch.Tensor
	step     int64
}

// NewAdamW creates zeroed moment buffers for params.
func NewAdamW(params []nn.Param, cfg AdamWConfig) (*AdamW, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	o := &AdamW{cfg: cfg.WithDefaults(), params: params}
	s := torch.NewScope(torch.NoGrad)
	defer s.Close()
	for _, p := range params {
		m, err := p.T.Meta()
		if err != nil {
			o.Close() // the buffers made so far
			return nil, fmt.Errorf("optim: adamw: parameter %s: %w", p.Name, err)
		}
		o.expAvg = append(o.expAvg, s.Keep(s.Zeros(m.Shape, m.DType, m.Device)))
		o.expAvgSq = append(o.expAvgSq, s.Keep(s.Zeros(m.Shape, m.DType, m.Device)))
	}
	if err := s.Err(); err != nil {
		o.Close()
		return nil, err
	}
	return o, nil
}

// Config is the optimizer's configuration (defaults filled in).
func (o *AdamW) Config() AdamWConfig { return o.cfg }

// Steps is the number of steps taken.
func (o *AdamW) Steps() int64 { return o.step }

// LR is the learning rate of step n (1-based): linear warm-up, then flat or
// decaying to 0 at DecaySteps (and 0 past it). A run no longer than its
// warm-up never decays.
func (o *AdamW) LR(n int64) float64 {
	c := o.cfg
	if c.WarmupSteps > 0 && n < c.WarmupSteps {
		return c.LR * float64(n) / float64(c.WarmupSteps)
	}
	if c.Decay == ConstantLR {
		return c.LR
	}
	start := max(c.WarmupSteps, 0)
	frac := min(float64(n-start)/float64(max(c.DecaySteps-start, 1)), 1)
	if c.Decay == CosineLR {
		return c.LR * 0.5 * (1 + math.Cos(math.Pi*frac))
	}
	return c.LR * (1 - frac)
}

// Step applies one update from the parameters' gradients and returns the
// learning rate it used.
func (o *AdamW) Step() (float64, error) {
	n := o.step + 1
	lr := o.LR(n)
	hp := torch.AdamWHyper{LR: lr, Beta1: o.cfg.Beta1, Beta2: o.cfg.Beta2, Eps: o.cfg.Eps, WeightDecay: o.cfg.WeightDecay, Step: n}
	if err := torch.AdamWStep(nn.Tensors(o.params), o.expAvg, o.expAvgSq, hp, !o.cfg.PerTensor); err != nil {
		return 0, err
	}
	o.step = n
	return lr, nil
}

// ZeroGrad drops every parameter's gradient.
func (o *AdamW) ZeroGrad() error {
	for _, p := range o.params {
		if err := p.T.ZeroGrad(); err != nil {
			return err
		}
	}
	return nil
}

// State names the moment buffers for a checkpoint ("adamw.exp_avg.<param>",
// "adamw.exp_avg_sq.<param>"); the step count travels separately.
func (o *AdamW) State() map[string]*torch.Tensor { return nn.StateDict(o.Buffers()) }

// Buffers are the moment buffers named as State names them, for loading
// with nn.LoadStateDict; the step count is restored with SetSteps.
func (o *AdamW) Buffers() []nn.Param {
	bufs := make([]nn.Param, 0, 2*len(o.params))
	for i, p := range o.params {
		bufs = append(bufs, nn.Param{Name: "adamw.exp_avg." + p.Name, T: o.expAvg[i]},
			nn.Param{Name: "adamw.exp_avg_sq." + p.Name, T: o.expAvgSq[i]})
	}
	return bufs
}

// SetSteps restores the step count of a checkpoint.
func (o *AdamW) SetSteps(n int64) { o.step = n }

// Close frees the moment buffers (not the parameters).
func (o *AdamW) Close() {
	for i := range o.expAvg {
		o.expAvg[i].Close()
		o.expAvgSq[i].Close()
	}
	o.expAvg, o.expAvgSq = nil, nil
}
