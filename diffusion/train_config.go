package diffusion

import (
	"fmt"
	"math"
	"strings"
)

// TimestepSampling is how training draws timesteps.
type TimestepSampling string

// Timestep sampling strategies.
const (
	// Uniform draws t uniformly from [0, T) (Ho et al. 2020).
	Uniform TimestepSampling = "uniform"
	// LossAware draws t with probability proportional to the root mean
	// square of its recent losses and reweights the loss by 1/(T p_t), so
	// the objective is unchanged and its variance lower (Nichol & Dhariwal
	// 2021, section 3.3, the loss-second-moment resampler).
	LossAware TimestepSampling = "loss-aware"
)

// ParseTimestepSampling accepts "uniform" and "loss-aware".
func ParseTimestepSampling(s string) (TimestepSampling, error) {
	switch TimestepSampling(strings.ToLower(strings.TrimSpace(s))) {
	case Uniform, "":
		return Uniform, nil
	case LossAware, "importance":
		return LossAware, nil
	}
	return "", fmt.Errorf("unknown timestep sampling %q (want uniform or loss-aware)", s)
}

// TrainConfig configures the trainer. Zero values take the defaults in
// brackets.
type TrainConfig struct {
	Steps     int64  `json:"steps"`      // optimizer steps to reach [10000]
	BatchSize int    `json:"batch_size"` // images per step [64]
	Seed      uint64 `json:"seed"`       // drives noise, timesteps, dropout and label dropout

	Target      Target           `json:"target"`            // what the model predicts [epsilon]
	Sampling    TimestepSampling `json:"timestep_sampling"` // [uniform]
	MinSNRGamma float64          `json:"min_snr_gamma"`     // > 0: min-SNR-γ loss weights (Hang et al. 2023) [off]

	// Precision is "float32" (default), "bf16" (autocast to bfloat16, on CPU
	// or CUDA) or "fp16" (autocast to float16 with a dynamic loss scale, on
	// CUDA). Weights, optimizer state, GroupNorm and the loss stay float32.
	Precision string `json:"precision"`

	Optimizer AdamWConfig `json:"optimizer"`
	GradClip  float64     `json:"grad_clip"` // global gradient norm limit; < 0 disables [1]
	EMADecay  float64     `json:"ema_decay"` // [0.9999]
	EMAWarmup bool        `json:"ema_warmup"`

	// NumClasses > 0 trains a class-conditional model whose null label
	// (NumClasses) replaces a label with probability LabelDropout, for
	// classifier-free guidance (Ho & Salimans 2022). [0]
	NumClasses   int     `json:"num_classes"`
	LabelDropout float64 `json:"label_dropout"`

	CheckpointEvery int64 `json:"checkpoint_every"` // [1000]
	KeepCheckpoints int   `json:"keep_checkpoints"` // most recent checkpoints kept [3]
	LogEvery        int64 `json:"log_every"`        // steps per metrics record [50]
	EvalEvery       int64 `json:"eval_every"`       // held-out evaluation; 0 disables
}

// WithDefaults fills in zero values.
func (c TrainConfig) WithDefaults() TrainConfig {
	if c.Steps == 0 {
		c.Steps = 10000
	}
	if c.BatchSize == 0 {
		c.BatchSize = 64
	}
	if c.Target == "" {
		c.Target = Epsilon
	}
	if c.Sampling == "" {
		c.Sampling = Uniform
	}
	if c.Precision == "" {
		c.Precision = "float32"
	}
	if c.GradClip == 0 {
		c.GradClip = 1
	}
	if c.EMADecay == 0 {
		c.EMADecay = 0.9999
	}
	if c.CheckpointEvery == 0 {
		c.CheckpointEvery = 1000
	}
	if c.KeepCheckpoints == 0 {
		c.KeepCheckpoints = 3
	}
	if c.LogEvery == 0 {
		c.LogEvery = 50
	}
	c.Optimizer = c.Optimizer.withDefaults()
	return c
}

// Validate reports the first out-of-range field, naming it.
func (c TrainConfig) Validate() error {
	c = c.WithDefaults()
	switch {
	case c.Steps < 1:
		return fmt.Errorf("steps %d must be at least 1", c.Steps)
	case c.BatchSize < 1 || c.BatchSize > 1<<16:
		return fmt.Errorf("batch size %d out of range [1, 65536]", c.BatchSize)
	case c.Target != Epsilon && c.Target != X0 && c.Target != V:
		return fmt.Errorf("unknown target %q (want epsilon, x0 or v)", c.Target)
	case c.Sampling != Uniform && c.Sampling != LossAware:
		return fmt.Errorf("unknown timestep sampling %q (want uniform or loss-aware)", c.Sampling)
	case c.Precision != "float32" && c.Precision != "bf16" && c.Precision != "fp16":
		return fmt.Errorf("unknown precision %q (want float32, bf16 or fp16)", c.Precision)
	case c.MinSNRGamma < 0 || math.IsNaN(c.MinSNRGamma):
		return fmt.Errorf("min-SNR gamma %g must be non-negative", c.MinSNRGamma)
	case math.IsNaN(c.GradClip):
		return fmt.Errorf("grad clip must be a number")
	case !(c.EMADecay >= 0 && c.EMADecay <= 1):
		return fmt.Errorf("EMA decay %g out of range [0, 1]", c.EMADecay)
	case c.NumClasses < 0:
		return fmt.Errorf("class count %d must be non-negative", c.NumClasses)
	case !(c.LabelDropout >= 0 && c.LabelDropout < 1):
		return fmt.Errorf("label dropout %g out of range [0, 1)", c.LabelDropout)
	case c.LabelDropout > 0 && c.NumClasses == 0:
		return fmt.Errorf("label dropout needs a class-conditional model")
	case c.CheckpointEvery < 1:
		return fmt.Errorf("checkpoint interval %d must be at least 1", c.CheckpointEvery)
	case c.KeepCheckpoints < 1:
		return fmt.Errorf("checkpoints to keep %d must be at least 1", c.KeepCheckpoints)
	case c.LogEvery < 1:
		return fmt.Errorf("log interval %d must be at least 1", c.LogEvery)
	case c.EvalEvery < 0:
		return fmt.Errorf("eval interval %d must be non-negative", c.EvalEvery)
	}
	return c.Optimizer.Validate()
}
