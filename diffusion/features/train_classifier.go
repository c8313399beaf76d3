package features

import (
	"context"
	"fmt"
	"math"

	"github.com/ddpm-go/ddpm/diffusion/data"
	"github.com/ddpm-go/ddpm/diffusion/optim"
	"github.com/ddpm-go/ddpm/torch"
)

// TrainOptions configure TrainClassifier. Zero values take the defaults in
// brackets. Every field but Device, Test and OnProgress is part of the
// cache key of ClassifierFor.
type TrainOptions struct {
	Epochs      int     // passes over the training images [3]
	BatchSize   int     // images per step [64]
	LR          float64 // AdamW learning rate, after a short linear warm-up [2e-3]
	WeightDecay float64 // AdamW decoupled weight decay [1e-4]
	Seed        uint64  // initial weights and the order of the images
	Width       int     // see ClassifierConfig.Width [DefaultClassifierWidth]
	// Device runs the training (the zero value is the CPU).
	Device torch.Device
	// Test, when set, is a labelled test split of the same images; the
	// accuracy on it is measured after training and recorded in Info.
	// Without it the accuracy on the training images is recorded.
	Test *data.Dataset
	// OnProgress, if set, is called after every step.
	OnProgress func(TrainProgress)
}

// TrainProgress reports one training step.
type TrainProgress struct {
	Epoch, Epochs int     // the current epoch, from 1, of Epochs
	Step, Steps   int     // steps done, from 1, of Steps in all
	Loss          float64 // cross entropy of the step's batch
}

func (o TrainOptions) withDefaults() TrainOptions {
	if o.Epochs == 0 {
		o.Epochs = 3
	}
	if o.BatchSize == 0 {
		o.BatchSize = 64
	}
	if o.LR == 0 {
		o.LR = 2e-3
	}
	if o.WeightDecay == 0 {
		o.WeightDecay = 1e-4
	}
	if o.Width == 0 {
		o.Width = DefaultClassifierWidth
	}
	return o
}

func (o TrainOptions) validate() error {
	switch {
	case o.Epochs < 0:
		return fmt.Errorf("features: classifier epochs %d must be positive", o.Epochs)
	case o.BatchSize < 0:
		return fmt.Errorf("features: classifier batch size %d must be positive", o.BatchSize)
	case o.LR < 0 || math.IsNaN(o.LR) || math.IsInf(o.LR, 0):
		return fmt.Errorf("features: classifier learning rate %g must be positive", o.LR)
	case o.WeightDecay < 0 || math.IsNaN(o.WeightDecay):
		return fmt.Errorf("features: classifier weight decay %g must not be negative", o.WeightDecay)
	}
	return nil
}

// checkLabelled reports why ds cannot train or test a classifier.
func checkLabelled(ds *data.Dataset, what string) error {
	switch {
	case ds == nil || ds.N == 0:
		return fmt.Errorf("features: the %s set is empty", what)
	case len(ds.Images) != ds.N*ds.C*ds.H*ds.W:
		return fmt.Errorf("features: the %s set %s has %d values, want N*C*H*W = %d", what, ds.Source, len(ds.Images), ds.N*ds.C*ds.H*ds.W)
	case ds.Labels == nil || ds.NumClasses < 2:
		return fmt.Errorf("features: the classifier needs labelled images of at least 2 classes, and the %s set %s has none", what, ds.Source)
	case len(ds.Labels) != ds.N:
		return fmt.Errorf("features: the %s set %s has %d labels for %d images", what, ds.Source, len(ds.Labels), ds.N)
	case ds.H != ds.W:
		return fmt.Errorf("features: the classifier needs square images, and %s has %d×%d", ds.Source, ds.H, ds.W)
	}
	for i, l := range ds.Labels {
		if l < 0 || l >= int64(ds.NumClasses) {
			return fmt.Errorf("features: the %s set %s has label %d at image %d, outside [0, %d)", what, ds.Source, l, i, ds.NumClasses)
		}
	}
	return nil
}

// TrainClassifier trains a Classifier on the labelled images of train with
// AdamW and the cross-entropy loss. The result depends only on the images,
// the labels and the options (not on the device, up to rounding): the same
// inputs give the same weights.
func TrainClassifier(ctx context.Context, train *data.Dataset, o TrainOptions) (*Classifier, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	o = o.withDefaults()
	if err := checkLabelled(train, "training"); err != nil {
		return nil, err
	}
	if o.Test != nil {
		if err := checkLabelled(o.Test, "test"); err != nil {
			return nil, err
		}
		if o.Test.C != train.C || o.Test.H != train.H || o.Test.NumClasses != train.NumClasses {
			return nil, fmt.Errorf("features: the test set (%d×%d×%d, %d classes) does not match the training set (%d×%d×%d, %d classes)",
				o.Test.C, o.Test.H, o.Test.W, o.Test.NumClasses, train.C, train.H, train.W, train.NumClasses)
		}
	}
	gen, err := torch.NewGenerator(o.Seed, o.Device)
	if err != nil {
		return nil, err
	}
	defer gen.Close()
	c, err := NewClassifier(ClassifierConfig{Channels: train.C, Size: train.H, Classes: train.NumClasses, Width: o.Width}, o.Device, gen)
	if err != nil {
		return nil, err
	}
	if err := c.fit(ctx, train, o); err != nil {
		c.Close()
		return nil, err
	}
	c.Info = ClassifierInfo{DataKey: ClassifierKey(train, o), ClassNames: append([]string(nil), train.ClassNames...)}
	eval, on := o.Test, "test"
	if eval == nil {
		eval, on = train, "train"
	}
	if c.Info.Accuracy, err = c.Accuracy(ctx, eval); err != nil {
		c.Close()
		return nil, err
	}
	c.Info.AccuracyOn = on
	return c, nil
}

// fit runs the optimisation.
func (c *Classifier) fit(ctx context.Context, train *data.Dataset, o TrainOptions) error {
	loader, err := data.NewLoader(train, data.LoaderOptions{BatchSize: o.BatchSize, Seed: o.Seed, Shuffle: true})
	if err != nil {
		return err
	}
	defer loader.Close()
	perEpoch := loader.BatchesPerEpoch()
	steps := o.Epochs * perEpoch
	warmup := int64(min(100, steps/10))
	if warmup == 0 {
		warmup = -1 // none (0 would select the optimizer's default)
	}
	opt, err := optim.NewAdamW(c.params, optim.AdamWConfig{LR: o.LR, WeightDecay: o.WeightDecay, WarmupSteps: warmup})
	if err != nil {
		return err
	}
	defer opt.Close()
	for step := 1; step <= steps; step++ {
		b, err := loader.Next(ctx)
		if err != nil {
			return err
		}
		loss, err := c.trainStep(b, opt)
		if err != nil {
			return fmt.Errorf("features: classifier step %d: %w", step, err)
		}
		if o.OnProgress != nil {
			o.OnProgress(TrainProgress{Epoch: (step-1)/perEpoch + 1, Epochs: o.Epochs, Step: step, Steps: steps, Loss: loss})
		}
	}
	return nil
}

// trainStep takes one optimizer step on batch b and returns its loss.
func (c *Classifier) trainStep(b data.Batch, opt *optim.AdamW) (float64, error) {
	s := torch.NewScope(torch.Grad)
	defer s.Close()
	n := int64(b.N)
	x := s.FromFloat32s(b.Images, n, int64(c.Config.Channels), int64(c.Config.Size), int64(c.Config.Size))
	labels := s.FromInt64s(b.Labels, n)
	if c.dev != torch.CPU {
		labels = s.To(labels, c.dev)
	}
	_, logits := c.Forward(s, x)
	loss := s.CrossEntropy(logits, labels, torch.ReduceMean)
	if err := s.Err(); err != nil {
		return 0, err
	}
	lv, err := loss.Item()
	if err != nil {
		return 0, err
	}
	if math.IsNaN(lv) || math.IsInf(lv, 0) {
		return 0, fmt.Errorf("the loss became %v; try a lower learning rate", lv)
	}
	s.Backward(loss)
	if err := s.Err(); err != nil {
		return 0, err
	}
	if _, err := opt.Step(); err != nil {
		return 0, err
	}
	return lv, opt.ZeroGrad()
}

// evalBatch is the number of images per forward pass when nothing is
// trained.
const evalBatch = 256

// Predict returns the most probable class of each image of ds.
func (c *Classifier) Predict(ctx context.Context, ds *data.Dataset) ([]int64, error) {
	fs, err := Extract(ctx, c, ds, ExtractOptions{Batch: evalBatch})
	if err != nil {
		return nil, err
	}
	return fs.ArgMax(), nil
}

// Accuracy is the fraction of the labelled images of ds that the classifier
// puts in their class.
func (c *Classifier) Accuracy(ctx context.Context, ds *data.Dataset) (float64, error) {
	if err := checkLabelled(ds, "test"); err != nil {
		return 0, err
	}
	if ds.NumClasses > c.Config.Classes {
		return 0, fmt.Errorf("features: %s has %d classes, the classifier knows %d", ds.Source, ds.NumClasses, c.Config.Classes)
	}
	pred, err := c.Predict(ctx, ds)
	if err != nil {
		return 0, err
	}
	right := 0
	for i, p := range pred {
		if p == ds.Labels[i] {
			right++
		}
	}
	return float64(right) / float64(ds.N), nil
}
