package main

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/diffusion/nn"
	"github.com/ddpm-go/ddpm/diffusion/optim"
	"github.com/ddpm-go/ddpm/diffusion/pipeline"
	"github.com/ddpm-go/ddpm/diffusion/unet"
	"github.com/ddpm-go/ddpm/torch"
)

// emaSampler samples the EMA weights during training, through the same
// pipeline as ddpm sample (its default sampler, pipeline.DefaultSampling),
// from noise seeded with the run's seed, so that successive calls
// differ only by the weights. Class-conditional models cycle through the
// classes.
type emaSampler struct {
	cfg   runConfig
	ema   *optim.EMA
	model *unet.UNet // a copy of the model holding the EMA weights
	p     *pipeline.Pipeline
}

func newEMASampler(cfg runConfig, dev torch.Device, sched *diffusion.Schedule, ema *optim.EMA, lat *pipeline.Latent) (*emaSampler, error) {
	model, err := unet.New(cfg.Model, dev, torch.Float32, nil)
	if err != nil {
		return nil, err
	}
	p, err := pipeline.New(model, sched, samplerInfo(cfg), pipeline.Options{Device: dev, Latent: lat})
	if err != nil {
		model.Close()
		return nil, err
	}
	return &emaSampler{cfg: cfg, ema: ema, model: model, p: p}, nil
}

// sample draws n images with the EMA weights as they are now.
func (e *emaSampler) sample(ctx context.Context, n int) (*pipeline.Images, error) {
	if err := nn.LoadStateDict(e.model.Params(), nn.StateDict(e.ema.Params())); err != nil {
		return nil, err
	}
	return e.p.Generate(ctx, n, pipeline.GenerateOptions{Seed: e.cfg.Train.Seed,
		Labels: pipeline.CycleLabels(n, e.cfg.Model.NumClasses)})
}

// writeGrid writes the run's sample grid of step into dir.
func (e *emaSampler) writeGrid(ctx context.Context, dir string, step int64) error {
	imgs, err := e.sample(ctx, e.cfg.SampleN)
	if err != nil {
		return fmt.Errorf("sample grid at step %d: %w", step, err)
	}
	return saveGrid(gridPath(dir, step), imgs)
}

// gridPath is the file of a run's grid of step in its samples folder dir.
func gridPath(dir string, step int64) string {
	return filepath.Join(dir, fmt.Sprintf("step-%08d.png", step))
}

func (e *emaSampler) close() { e.model.Close() }
