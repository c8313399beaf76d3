package main

import (
	"context"
	"fmt"
	"io"

	"github.com/ddpm-go/ddpm/diffusion/data"
	"github.com/ddpm-go/ddpm/diffusion/features"
)

// trainFID measures the offline FID (fid_classifier) during training: it
// samples images with the EMA weights (the default sampler, the same noise
// every time, the classes in turn) and compares their features in the space
// of the data's cached feature classifier with those of the training data,
// as ddpm eval --seed (the run's seed) does: evalN samples every evalEvery
// steps, and final samples after the last step.
type trainFID struct {
	evalEvery int64
	evalN     int
	final     int
	data      *data.Dataset // the whole dataset, as ddpm eval reads it
	ema       *emaSampler   // the EMA model copy and the run's settings
	out       io.Writer
	quiet     bool

	clf *features.Classifier
	ref *features.Reference
}

// newTrainFID returns nil, after saying why, when the offline FID cannot
// be measured: no evaluations asked for, or data without labels.
func newTrainFID(cfg runConfig, evalN, final int, ds *data.Dataset, ema *emaSampler, out io.Writer, quiet bool) *trainFID {
	if cfg.Train.EvalEvery <= 0 || evalN <= 0 {
		evalN = 0
	} else {
		evalN = max(evalN, 2)
	}
	if evalN == 0 && final <= 0 {
		return nil
	}
	if ds.Labels == nil || ds.NumClasses < 2 {
		fmt.Fprintf(out, "ddpm: no fid_classifier: %s has no labels to train the feature classifier on\n", ds.Source)
		return nil
	}
	if final > 0 {
		final = max(final, 2)
	}
	return &trainFID{evalEvery: cfg.Train.EvalEvery, evalN: evalN, final: max(final, 0), data: ds, ema: ema, out: out, quiet: quiet}
}

// samplesAt is how many samples the evaluation of step scores: the final
// evaluation's at the last step, evalN at multiples of evalEvery, else 0.
func (f *trainFID) samplesAt(step int64) int {
	switch {
	case f == nil:
		return 0
	case f.finalAt(step):
		return f.final
	case f.evalN > 0 && step%f.evalEvery == 0:
		return f.evalN
	}
	return 0
}

// finalAt reports whether step's evaluation is the final one.
func (f *trainFID) finalAt(step int64) bool {
	return f != nil && f.final > 0 && step == f.ema.cfg.Train.Steps
}

// measure returns the offline FID of n samples of the EMA weights now; ctx
// (the training run's) stops it.
func (f *trainFID) measure(ctx context.Context, step int64, n int) (float64, error) {
	if f.ref == nil {
		if err := f.prepare(ctx); err != nil {
			return 0, fmt.Errorf("fid_classifier: %w", err)
		}
	}
	imgs, err := f.ema.sample(ctx, n)
	if err != nil {
		return 0, fmt.Errorf("fid_classifier at step %d: %w", step, err)
	}
	gen := &data.Dataset{N: imgs.N, C: imgs.C, H: imgs.H, W: imgs.W, Images: imgs.Pixels, Source: "samples"}
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
	o := features.TrainOptions{Device: f.ema.p.Device()}
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
