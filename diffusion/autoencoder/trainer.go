package autoencoder

import (
	"context"
	"fmt"
	"math"

	"github.com/ddpm-go/ddpm/diffusion/data"
	"github.com/ddpm-go/ddpm/diffusion/nn"
	"github.com/ddpm-go/ddpm/diffusion/optim"
	"github.com/ddpm-go/ddpm/torch"
)

// TrainConfig configures a Trainer. It is stored in checkpoints as JSON.
type TrainConfig struct {
	// Steps is the number of optimizer steps of the run (the trainer does
	// not stop by itself; the caller loops until Steps).
	Steps int64 `json:"steps"`
	// BatchSize is the number of images per step.
	BatchSize int `json:"batch_size"`
	// Optimizer is AdamW's configuration (zero fields: its defaults).
	Optimizer optim.AdamWConfig `json:"optimizer"`
	// Loss is the objective.
	Loss Loss `json:"loss"`
	// EMADecay, when > 0, keeps an exponential moving average of the
	// weights with that decay (with warm-up); 0 keeps none.
	EMADecay float64 `json:"ema_decay"`
	// GradClip, when > 0, clips the gradients' global norm to it.
	GradClip float64 `json:"grad_clip"`
	// Flip mirrors training images left to right at random.
	Flip bool `json:"flip"`
	// Seed determines the data order and the posterior draws.
	Seed uint64 `json:"seed"`

	// The trainer does not use the fields below: they are the caller's
	// choices for the run, stored in its checkpoints so that a resumed run
	// keeps them. Zero (nil) means not recorded.
	//
	// CheckpointEvery is the number of steps between checkpoints.
	CheckpointEvery int64 `json:"checkpoint_every,omitempty"`
	// KeepCheckpoints is how many of the newest checkpoints are kept.
	KeepCheckpoints int `json:"keep_checkpoints,omitempty"`
	// HeldOut is how many images were set aside for evaluation; when they
	// come out of the training data it decides which images train.
	HeldOut *int `json:"held_out,omitempty"`
}

// Validate reports the first bad field.
func (c TrainConfig) Validate() error {
	switch {
	case c.Steps <= 0:
		return fmt.Errorf("autoencoder: steps must be positive, got %d", c.Steps)
	case c.BatchSize <= 0:
		return fmt.Errorf("autoencoder: batch size must be positive, got %d", c.BatchSize)
	case !(c.EMADecay >= 0 && c.EMADecay < 1):
		return fmt.Errorf("autoencoder: ema_decay must be in [0, 1), got %g", c.EMADecay)
	case math.IsNaN(c.GradClip) || math.IsInf(c.GradClip, 0):
		return fmt.Errorf("autoencoder: grad_clip must be finite, got %g", c.GradClip)
	case c.CheckpointEvery < 0:
		return fmt.Errorf("autoencoder: checkpoint_every must not be negative, got %d", c.CheckpointEvery)
	case c.KeepCheckpoints < 0:
		return fmt.Errorf("autoencoder: keep_checkpoints must not be negative, got %d", c.KeepCheckpoints)
	case c.HeldOut != nil && *c.HeldOut < 0:
		return fmt.Errorf("autoencoder: held_out must not be negative, got %d", *c.HeldOut)
	}
	if err := c.Loss.Validate(); err != nil {
		return err
	}
	if err := c.Optimizer.WithDefaults().Validate(); err != nil {
		return fmt.Errorf("autoencoder: %w", err)
	}
	return nil
}

// StepStats are the loss terms and learning rate of one step.
type StepStats struct {
	Loss, Reconstruction, KL, LR float64
}

// Trainer trains a Model by AdamW on batches of a dataset. It owns its
// optimizer state, EMA weights, generator and data loader (Close frees
// them), not the model. It is not safe for concurrent use.
type Trainer struct {
	model  *Model
	cfg    TrainConfig
	opt    *optim.AdamW
	ema    *optim.EMA // nil without EMA
	gen    *torch.Generator
	loader *data.Loader
	step   int64
	image  [3]int64 // C, H, W of the training images
	data   string   // the dataset's path, recorded in checkpoints

	// Reseeded reports that Resume read a checkpoint written on another
	// kind of device and seeded the noise generator anew
	// (checkpoint.Generator).
	Reseeded bool
}

// NewTrainer prepares the training of m on train, whose images must have
// the model's input channels and sides divisible by its Downscale; the
// model must reconstruct what it encodes (out_channels = in_channels). A
// model built with NewForTraining trains fastest (on the CPU).
func NewTrainer(m *Model, train *data.Dataset, cfg TrainConfig) (t *Trainer, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	mc := m.Config()
	switch f := int(mc.Downscale()); {
	case mc.OutChannels != mc.InChannels:
		return nil, fmt.Errorf("autoencoder: a model with in_channels %d and out_channels %d cannot reconstruct its input", mc.InChannels, mc.OutChannels)
	case train.C != mc.InChannels:
		return nil, fmt.Errorf("autoencoder: the images have %d channels, the model takes %d", train.C, mc.InChannels)
	case train.H%f != 0 || train.W%f != 0:
		return nil, fmt.Errorf("autoencoder: the images are %dx%d; the model needs sides divisible by %d", train.H, train.W, f)
	case train.N < cfg.BatchSize:
		return nil, fmt.Errorf("autoencoder: %d training images are fewer than a batch of %d", train.N, cfg.BatchSize)
	}
	t = &Trainer{model: m, cfg: cfg, data: train.Path, image: [3]int64{int64(train.C), int64(train.H), int64(train.W)}}
	defer func() {
		if err != nil {
			t.Close()
		}
	}()
	if t.opt, err = optim.NewAdamW(m.Params(), cfg.Optimizer); err != nil {
		return nil, fmt.Errorf("autoencoder: %w", err)
	}
	if cfg.EMADecay > 0 {
		if t.ema, err = optim.NewEMA(m.Params(), cfg.EMADecay, true); err != nil {
			return nil, fmt.Errorf("autoencoder: %w", err)
		}
	}
	if t.gen, err = torch.NewGenerator(cfg.Seed, m.Device()); err != nil {
		return nil, fmt.Errorf("autoencoder: %w", err)
	}
	t.loader, err = data.NewLoader(train, data.LoaderOptions{
		BatchSize: cfg.BatchSize, Seed: cfg.Seed, Shuffle: true, FlipHorizontal: cfg.Flip, DropLast: true,
	})
	if err != nil {
		return nil, fmt.Errorf("autoencoder: %w", err)
	}
	return t, nil
}

// Steps is the number of optimizer steps taken (restored by Resume).
func (t *Trainer) Steps() int64 { return t.step }

// Config is the training configuration.
func (t *Trainer) Config() TrainConfig { return t.cfg }

// EMA is the moving average of the weights, named like the model's
// parameters, or nil without EMA. The trainer owns it.
func (t *Trainer) EMA() []nn.Param {
	if t.ema == nil {
		return nil
	}
	return t.ema.Params()
}

// Close frees the optimizer state, the EMA weights, the generator and the
// loader. Safe to call more than once.
func (t *Trainer) Close() {
	if t.loader != nil {
		t.loader.Close()
	}
	if t.opt != nil {
		t.opt.Close()
	}
	if t.ema != nil {
		t.ema.Close()
	}
	if t.gen != nil {
		t.gen.Close()
	}
}

// Step takes one optimizer step on the next batch. A loss that is not
// finite stops training with an error (the weights are then unchanged).
func (t *Trainer) Step(ctx context.Context) (StepStats, error) {
	b, err := t.loader.Next(ctx)
	if err != nil {
		return StepStats{}, fmt.Errorf("autoencoder: %w", err)
	}
	m := t.model
	s := torch.NewScope(torch.Grad)
	defer s.Close()
	x := s.FromFloat32s(b.Images, int64(b.N), t.image[0], t.image[1], t.image[2])
	if m.Device() != torch.CPU {
		x = s.To(x, m.Device())
	}
	if m.DType() != torch.Float32 {
		x = s.ToDType(x, m.DType())
	}
	terms := m.Loss(s, x, t.gen, t.cfg.Loss)
	if err := s.Err(); err != nil {
		return StepStats{}, err
	}
	var st StepStats
	for _, v := range []struct {
		dst *float64
		t   *torch.Tensor
	}{{&st.Loss, terms.Total}, {&st.Reconstruction, terms.Reconstruction}, {&st.KL, terms.KL}} {
		if *v.dst, err = v.t.Item(); err != nil {
			return StepStats{}, fmt.Errorf("autoencoder: %w", err)
		}
	}
	if math.IsNaN(st.Loss) || math.IsInf(st.Loss, 0) {
		return st, fmt.Errorf("autoencoder: the loss is %g at step %d: training diverged (lower the learning rate)", st.Loss, t.step+1)
	}
	if err := t.opt.ZeroGrad(); err != nil {
		return StepStats{}, fmt.Errorf("autoencoder: %w", err)
	}
	s.Backward(terms.Total)
	if err := s.Err(); err != nil {
		return StepStats{}, err
	}
	if t.cfg.GradClip > 0 {
		if _, err := torch.ClipGradNorm(nn.Tensors(m.params), t.cfg.GradClip); err != nil {
			return StepStats{}, fmt.Errorf("autoencoder: %w", err)
		}
	}
	if st.LR, err = t.opt.Step(); err != nil {
		return StepStats{}, fmt.Errorf("autoencoder: %w", err)
	}
	if t.ema != nil {
		if err := t.ema.Update(m.params); err != nil {
			return StepStats{}, fmt.Errorf("autoencoder: %w", err)
		}
	}
	t.step++
	return st, nil
}
