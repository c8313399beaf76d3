package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/diffusion/data"
	"github.com/ddpm-go/ddpm/diffusion/features"
	"github.com/ddpm-go/ddpm/diffusion/nn"
	"github.com/ddpm-go/ddpm/diffusion/unet"
	"github.com/ddpm-go/ddpm/torch"
)

// trainFID measures the offline FID (fid_classifier) during training: it
// samples n images with the EMA weights (DDIM, 50 steps, the same noise
// every time) and compares their features in the space of the data's
// cached feature classifier with those of the training data, exactly as
// ddpm eval does.
type trainFID struct {
	n     int
	data  *data.Dataset // the whole dataset, as ddpm eval reads it
	grids *gridSampler  // the EMA model copy and the run's settings
	out   io.Writer
	quiet bool

	clf *features.Classifier
	ref *features.Reference
}

// newTrainFID returns nil, after saying why, when the offline FID cannot
// be measured: no evaluations asked for, or data without labels.
func newTrainFID(cfg runConfig, n int, ds *data.Dataset, grids *gridSampler, out io.Writer, quiet bool) *trainFID {
	if cfg.Train.EvalEvery <= 0 || n <= 0 {
		return nil
	}
	if ds.Labels == nil || ds.NumClasses < 2 {
		fmt.Fprintf(out, "ddpm: no fid_classifier: %s has no labels to train the feature classifier on\n", ds.Source)
		return nil
	}
	return &trainFID{n: max(n, 2), data: ds, grids: grids, out: out, quiet: quiet}
}

// due reports whether step is an evaluation step.
func (f *trainFID) due(step int64) bool {
	return f != nil && step%f.grids.cfg.Train.EvalEvery == 0
}

// measure returns the offline FID of the EMA weights now. Ctrl-C stops it.
func (f *trainFID) measure(parent context.Context, step int64) (float64, error) {
	ctx, stop := signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
	defer stop()
	if f.ref == nil {
		if err := f.prepare(ctx); err != nil {
			return 0, fmt.Errorf("fid_classifier: %w", err)
		}
	}
	pix, err := f.grids.sampleEMA(ctx, f.n)
	if err != nil {
		return 0, fmt.Errorf("fid_classifier at step %d: %w", step, err)
	}
	m := f.grids.cfg.Model
	gen := &data.Dataset{N: f.n, C: m.OutChannels, H: m.ImageSize, W: m.ImageSize, Images: pix, Source: "samples"}
	r, err := features.Evaluate(ctx, f.clf, gen, f.ref, features.Options{})
	if err != nil {
		return 0, fmt.Errorf("fid_classifier at step %d: %w", step, err)
	}
	return r.FID, nil
}

// prepare loads or trains the classifier and fits the data's statistics.
func (f *trainFID) prepare(ctx context.Context) error {
	dir, err := features.DefaultCacheDir()
	if err != nil {
		return err
	}
	o := features.TrainOptions{Device: f.grids.dev}
	announced := false
	o.OnProgress = func(p features.TrainProgress) {
		if !announced && !f.quiet {
			fmt.Fprintf(f.out, "\nddpm: training the feature classifier for fid_classifier (%d steps; once: it is cached in %s)\n", p.Steps, dir)
			announced = true
		}
	}
	if f.clf, err = features.ClassifierFor(ctx, f.data, dir, o); err != nil {
		return err
	}
	fs, err := features.Extract(ctx, f.clf, f.data, features.ExtractOptions{Batch: 256})
	if err != nil {
		return err
	}
	ref, err := features.NewReference(fs)
	if err != nil {
		return err
	}
	// Only the statistics are kept: KID is left to ddpm eval.
	f.ref = &features.Reference{Stats: ref.Stats}
	return nil
}

func (f *trainFID) close() {
	if f != nil && f.clf != nil {
		f.clf.Close()
	}
}

// sampleEMA draws n images with the EMA weights (DDIM, 50 steps, x0
// clipped as ddpm sample does, in batches of 64), from noise seeded with the
// run's seed, so that successive calls differ only by the weights.
// Class-conditional models cycle through the classes.
func (g *gridSampler) sampleEMA(ctx context.Context, n int) ([]float32, error) {
	if g.model == nil {
		m, err := unet.New(g.cfg.Model, g.dev, torch.Float32, nil)
		if err != nil {
			return nil, err
		}
		g.model = m
	}
	if err := nn.LoadStateDict(g.model.Params(), nn.StateDict(g.ema.Params())); err != nil {
		return nil, err
	}
	gen, err := torch.NewGenerator(g.cfg.Train.Seed, g.dev)
	if err != nil {
		return nil, err
	}
	defer gen.Close()
	m := g.cfg.Model
	out := make([]float32, 0, n*m.OutChannels*m.ImageSize*m.ImageSize)
	for done := 0; done < n; {
		b := min(64, n-done)
		pix, err := g.sampleBatch(ctx, gen, done, b)
		if err != nil {
			return nil, err
		}
		out = append(out, pix...)
		done += b
	}
	return out, nil
}

// sampleBatch draws images first..first+b-1 of sampleEMA.
func (g *gridSampler) sampleBatch(ctx context.Context, gen *torch.Generator, first, b int) ([]float32, error) {
	s := torch.NewScope(torch.Inference)
	defer s.Close()
	m := g.cfg.Model
	o := diffusion.SampleOptions{Sampler: diffusion.SamplerDDIM, Steps: 50, Target: g.cfg.Train.Target, Clip: diffusion.ClipStatic}
	if m.NumClasses > 0 {
		labels := make([]int64, b)
		for i := range labels {
			labels[i] = int64((first + i) % m.NumClasses)
		}
		o.Labels = s.FromInt64s(labels, int64(b))
		if g.dev != torch.CPU {
			o.Labels = s.To(o.Labels, g.dev)
		}
		o.NullLabel = int64(m.NumClasses)
	}
	x, err := diffusion.SampleShape(ctx, g.model, []int64{int64(b), int64(m.OutChannels), int64(m.ImageSize), int64(m.ImageSize)},
		torch.Float32, g.sched, gen, o)
	if err != nil {
		return nil, err
	}
	s.Adopt(x)
	x = s.Clamp(s.To(x, torch.CPU), -1, 1)
	if err := s.Err(); err != nil {
		return nil, err
	}
	return x.Float32s()
}
