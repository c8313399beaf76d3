package train

import (
	"fmt"
	"math"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/diffusion/optim"
	"github.com/ddpm-go/ddpm/internal/enum"
)

// Sampling is how training draws timesteps.
type Sampling string

// Timestep sampling strategies.
const (
	// Uniform draws t uniformly from [0, T) (Ho et al. 2020).
	Uniform Sampling = "uniform"
	// LossAware draws t with probability proportional to the root mean
	// square of its recent losses and reweights the loss by 1/(T p_t), so
	// the objective is unchanged and its variance lower (Nichol & Dhariwal
	// 2021, section 3.3, the loss-second-moment resampler).
	LossAware Sampling = "loss-aware"
)

var samplings = []Sampling{Uniform, LossAware}

// ParseSampling parses "uniform" or "loss-aware" (also "importance") the
// enum way.
func ParseSampling(s string) (Sampling, error) {
	v, err := enum.Parse("timestep sampling", s, samplings, map[string]Sampling{"importance": LossAware})
	if err != nil {
		return "", fmt.Errorf("train: %w", err)
	}
	return v, nil
}

// Config configures the trainer. Its zero value is the default recipe:
// every zero field takes the default in brackets (DefaultConfig lists
// them; the CLI's flags start from the same values).
type Config struct {
	Steps     int64  `json:"steps"`      // optimizer steps to reach [20000]
	BatchSize int    `json:"batch_size"` // images per step [64]
	Seed      uint64 `json:"seed"`       // drives noise, timesteps, dropout and label dropout

	Target      diffusion.Target `json:"target"`            // what the model predicts [epsilon]
	Sampling    Sampling         `json:"timestep_sampling"` // [uniform]
	MinSNRGamma float64          `json:"min_snr_gamma"`     // > 0: min-SNR-γ loss weights (Hang et al. 2023) [off]

	// Precision is Float32, BF16 (autocast to bfloat16, on CPU or CUDA) or
	// FP16 (autocast to float16 with a dynamic loss scale, on CUDA).
	// Weights, optimizer state, GroupNorm and the loss stay float32.
	// [float32]
	Precision diffusion.Precision `json:"precision"`

	Optimizer optim.AdamWConfig `json:"optimizer"`
	GradClip  float64           `json:"grad_clip"` // global gradient norm limit; < 0 disables [1]
	EMADecay  float64           `json:"ema_decay"` // [0.999]
	// NoEMAWarmup turns off the EMA's warm-up (optim.EMA), on by default.
	NoEMAWarmup bool `json:"no_ema_warmup"`

	// NumClasses > 0 trains a class-conditional model whose null label
	// (NumClasses) replaces a label with probability LabelDropout, for
	// classifier-free guidance (Ho & Salimans 2022). [0]
	NumClasses   int     `json:"num_classes"`
	LabelDropout float64 `json:"label_dropout"`

	CheckpointEvery int64 `json:"checkpoint_every"` // [500]
	KeepCheckpoints int   `json:"keep_checkpoints"` // most recent checkpoints kept [3]
	LogEvery        int64 `json:"log_every"`        // steps per metrics record [50]
	EvalEvery       int64 `json:"eval_every"`       // held-out evaluation; 0 disables
}

// Defaults of a zero Config.
const (
	DefaultSteps           = 20000
	DefaultBatchSize       = 64
	DefaultEMADecay        = 0.999
	DefaultCheckpointEvery = 500
	DefaultKeepCheckpoints = 3
	DefaultLogEvery        = 50
)

// DefaultConfig is the zero Config with its defaults filled in.
func DefaultConfig() Config { return Config{}.WithDefaults() }

// WithDefaults fills in zero values.
func (c Config) WithDefaults() Config {
	if c.Steps == 0 {
		c.Steps = DefaultSteps
	}
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.Target == "" {
		c.Target = diffusion.Epsilon
	}
	if c.Sampling == "" {
		c.Sampling = Uniform
	}
	if c.Precision == "" {
		c.Precision = diffusion.Float32
	}
	if c.GradClip == 0 {
		c.GradClip = 1
	}
	if c.EMADecay == 0 {
		c.EMADecay = DefaultEMADecay
	}
	if c.CheckpointEvery == 0 {
		c.CheckpointEvery = DefaultCheckpointEvery
	}
	if c.KeepCheckpoints == 0 {
		c.KeepCheckpoints = DefaultKeepCheckpoints
	}
	if c.LogEvery == 0 {
		c.LogEvery = DefaultLogEvery
	}
	c.Optimizer = c.Optimizer.WithDefaults()
	return c
}

// optimizer is the optimizer's configuration with a learning-rate decay
// that names no end ending at Steps (so a resumed run given more steps
// stretches its decay to them).
func (c Config) optimizer() optim.AdamWConfig {
	o := c.Optimizer
	if o.DecaySteps == 0 {
		o.DecaySteps = c.Steps
	}
	return o
}

// Validate reports the first out-of-range field, naming it.
func (c Config) Validate() error {
	c = c.WithDefaults()
	switch {
	case c.Steps < 1:
		return fmt.Errorf("train: steps %d must be at least 1", c.Steps)
	case c.BatchSize < 1 || c.BatchSize > 1<<16:
		return fmt.Errorf("train: batch size %d out of range [1, 65536]", c.BatchSize)
	case !c.Target.Valid():
		return fmt.Errorf("train: unknown target %q (valid: epsilon, x0, v)", c.Target)
	case !enum.Valid(c.Sampling, samplings):
		return fmt.Errorf("train: unknown timestep sampling %q (valid: %s)", c.Sampling, enum.List(samplings))
	case !c.Precision.Valid():
		return fmt.Errorf("train: unknown precision %q (valid: float32, bf16, fp16)", c.Precision)
	case c.MinSNRGamma < 0 || math.IsNaN(c.MinSNRGamma):
		return fmt.Errorf("train: min-SNR gamma %g must be non-negative", c.MinSNRGamma)
	case math.IsNaN(c.GradClip):
		return fmt.Errorf("train: grad clip must be a number")
	case !(c.EMADecay >= 0 && c.EMADecay <= 1):
		return fmt.Errorf("train: EMA decay %g out of range [0, 1]", c.EMADecay)
	case c.NumClasses < 0:
		return fmt.Errorf("train: class count %d must be non-negative", c.NumClasses)
	case !(c.LabelDropout >= 0 && c.LabelDropout < 1):
		return fmt.Errorf("train: label dropout %g out of range [0, 1)", c.LabelDropout)
	case c.LabelDropout > 0 && c.NumClasses == 0:
		return fmt.Errorf("train: label dropout needs a class-conditional model")
	case c.CheckpointEvery < 1:
		return fmt.Errorf("train: checkpoint interval %d must be at least 1", c.CheckpointEvery)
	case c.KeepCheckpoints < 1:
		return fmt.Errorf("train: checkpoints to keep %d must be at least 1", c.KeepCheckpoints)
	case c.LogEvery < 1:
		return fmt.Errorf("train: log interval %d must be at least 1", c.LogEvery)
	case c.EvalEvery < 0:
		return fmt.Errorf("train: eval interval %d must be non-negative", c.EvalEvery)
	}
	if err := c.optimizer().Validate(); err != nil {
		return fmt.Errorf("train: %w", err)
	}
	return nil
}
