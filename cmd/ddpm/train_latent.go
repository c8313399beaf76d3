package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"path/filepath"

	"github.com/ddpm-go/ddpm/diffusion/checkpoint"
	"github.com/ddpm-go/ddpm/diffusion/data"
	"github.com/ddpm-go/ddpm/diffusion/nn"
	"github.com/ddpm-go/ddpm/diffusion/pipeline"
	"github.com/ddpm-go/ddpm/diffusion/train"
	"github.com/ddpm-go/ddpm/torch"
	"github.com/urfave/cli/v2"
)

// Latent diffusion (ddpm train --autoencoder): the U-Net is trained on the
// latents of a frozen autoencoder. Each batch is encoded to the posterior
// mean, not a posterior sample: the mean is deterministic, so a resumed run
// sees exactly the batches an uninterrupted one would, and with the small
// KL weight of train-autoencoder the posterior's spread is far below the
// noise the diffusion adds anyway.
const (
	// scaleBatches is how many batches of training images (the first ones
	// of the training split) measure the scaling factor, 1/std of their
	// latents, for an autoencoder trained here.
	scaleBatches = 4
	// heldLatents is how many held-out images are encoded for the
	// trainer's evaluation (it evaluates 256).
	heldLatents = 256
)

// latentRun is the autoencoder of a latent diffusion run; for a pixel run
// it is empty and every method passes the pixels through.
type latentRun struct {
	ref *checkpoint.Autoencoder // cfg.Autoencoder
	l   *pipeline.Latent
	dev torch.Device
}

// openLatent loads the autoencoder of a run. A new run given --autoencoder
// (path: an autoencoder checkpoint, a train-autoencoder run directory, or a
// diffusers AutoencoderKL folder) records it in cfg and gets its U-Net
// built at the latent shape; a resumed run loads what its config.json
// records.
func openLatent(c *cli.Context, cfg *runConfig, dir string, resume bool, dev torch.Device) (*latentRun, error) {
	path := c.String("autoencoder")
	if resume {
		if cfg.Autoencoder == nil {
			return &latentRun{}, nil
		}
		l, err := pipeline.LoadLatent(filepath.Join(dir, configFile), *cfg.Autoencoder, dev)
		if err != nil {
			return nil, err
		}
		return &latentRun{ref: cfg.Autoencoder, l: l, dev: dev}, nil
	}
	if path == "" {
		return &latentRun{}, nil
	}
	m, file, w, err := pipeline.LoadAutoencoder(path, "", dev)
	if err != nil {
		return nil, err
	}
	r := &latentRun{l: &pipeline.Latent{Model: m}, dev: dev}
	a := m.Config()
	size := a.SampleSize
	if c.IsSet("image-size") {
		size = cfg.Model.ImageSize
	}
	down := int(a.Downscale())
	switch {
	case a.InChannels != a.OutChannels:
		err = fmt.Errorf("--autoencoder %s encodes %d channels but decodes %d; latent diffusion needs the same on both sides", path, a.InChannels, a.OutChannels)
	case c.IsSet("channels") && c.Int("channels") != a.InChannels:
		err = fmt.Errorf("--channels %d, but the autoencoder %s takes %d-channel images", c.Int("channels"), path, a.InChannels)
	case size < 1 || size%down != 0:
		err = fmt.Errorf("image size %d is not a multiple of %d, the autoencoder %s's downscale (give --image-size)", size, down, path)
	}
	if err != nil {
		r.close()
		return nil, err
	}
	ref := &checkpoint.Autoencoder{Path: file, Weights: w, ImageChannels: a.OutChannels, ImageSize: size,
		LatentChannels: a.LatentChannels, LatentSize: size / down}
	if ref.Fingerprint, err = nn.Fingerprint(m.Params()); err != nil {
		r.close()
		return nil, err
	}
	if w == "" { // a diffusers folder: its own factors
		ref.ScalingFactor, ref.ShiftFactor = a.ScalingFactor, a.Shift()
		r.l.ScalingFactor, r.l.ShiftFactor = ref.ScalingFactor, ref.ShiftFactor
	}
	if absDir, err1 := filepath.Abs(dir); err1 == nil {
		if absFile, err2 := filepath.Abs(file); err2 == nil {
			if rel, err3 := filepath.Rel(absDir, absFile); err3 == nil {
				ref.RunPath = rel
			}
		}
	}
	cfg.Model.InChannels, cfg.Model.OutChannels, cfg.Model.ImageSize = ref.LatentChannels, ref.LatentChannels, ref.LatentSize
	if err := cfg.Model.Validate(); err != nil {
		r.close()
		return nil, fmt.Errorf("the U-Net at the latent shape %dx%dx%d: %w", ref.LatentChannels, ref.LatentSize, ref.LatentSize, err)
	}
	cfg.Autoencoder, r.ref = ref, ref
	return r, nil
}

// dataShape is the size and channels of a run's training images: the
// autoencoder's images for a latent run, else the model's.
func dataShape(cfg runConfig) (size, channels int) {
	if a := cfg.Autoencoder; a != nil {
		return a.ImageSize, a.ImageChannels
	}
	return cfg.Model.ImageSize, cfg.Model.InChannels
}

// prepare measures the scaling factor of an autoencoder trained here on
// the first scaleBatches batches of trainSet (a new run; a diffusers
// folder brings its own, a resumed run has it recorded) and says what the
// run trains on.
func (r *latentRun) prepare(cfg *runConfig, trainSet *data.Dataset, out io.Writer) error {
	if r.ref == nil {
		return nil
	}
	how := "recorded"
	if r.ref.ScalingFactor == 0 {
		n := min(trainSet.N, scaleBatches*cfg.Train.BatchSize)
		per := trainSet.C * trainSet.H * trainSet.W
		var sum, sumSq float64
		for lo := 0; lo < n; lo += cfg.Train.BatchSize {
			hi := min(lo+cfg.Train.BatchSize, n)
			z, err := r.encode(trainSet.Images[lo*per:hi*per], hi-lo, false)
			if err != nil {
				return err
			}
			for _, v := range z {
				sum += float64(v)
				sumSq += float64(v) * float64(v)
			}
		}
		k := float64(n * r.ref.LatentChannels * r.ref.LatentSize * r.ref.LatentSize)
		std := math.Sqrt((sumSq - sum*sum/k) / (k - 1))
		if !(std > 0) || math.IsInf(std, 0) {
			return fmt.Errorf("the autoencoder %s gives latents of standard deviation %g on the training images; it cannot be scaled", r.ref.Path, std)
		}
		r.ref.ScalingFactor, r.ref.ShiftFactor = 1/std, 0
		how = fmt.Sprintf("1/std of the latents of %d training images", n)
	} else if r.ref.Weights == "" {
		how = "the AutoencoderKL config's"
	}
	r.l.ScalingFactor, r.l.ShiftFactor = r.ref.ScalingFactor, r.ref.ShiftFactor
	fmt.Fprintf(out, "ddpm: latent diffusion: %s encodes %dx%dx%d images to %dx%dx%d latents; scaling factor %.5g (%s), shift %g\n",
		r.ref.Path, r.ref.ImageChannels, r.ref.ImageSize, r.ref.ImageSize, r.ref.LatentChannels, r.ref.LatentSize, r.ref.LatentSize,
		r.ref.ScalingFactor, how, r.ref.ShiftFactor)
	return nil
}

// encode maps n images in [-1, 1] to the posterior means of their latents
// on the host, scaled to the model's space when scaled is set.
func (r *latentRun) encode(images []float32, n int, scaled bool) ([]float32, error) {
	s := torch.NewScope(torch.Inference)
	defer s.Close()
	x := s.FromFloat32s(images, int64(n), int64(r.ref.ImageChannels), int64(r.ref.ImageSize), int64(r.ref.ImageSize))
	if r.dev != torch.CPU {
		x = s.To(x, r.dev)
	}
	z, _ := r.l.Model.Encode(s, x)
	if scaled {
		z = s.MulScalar(s.AddScalar(z, -r.ref.ShiftFactor), r.ref.ScalingFactor)
	}
	if r.dev != torch.CPU {
		z = s.To(z, torch.CPU)
	}
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("encoding a batch with the autoencoder: %w", err)
	}
	return z.Float32s()
}

// source is what the trainer reads: the loader's batches, encoded to
// scaled latents for a latent run.
func (r *latentRun) source(l *data.Loader) train.BatchSource {
	if r.ref == nil {
		return l
	}
	return latentSource{r: r, l: l}
}

type latentSource struct {
	r *latentRun
	l *data.Loader
}

func (s latentSource) Next(ctx context.Context) (data.Batch, error) {
	b, err := s.l.Next(ctx)
	if err != nil {
		return b, err
	}
	b.Images, err = s.r.encode(b.Images, b.N, true)
	return b, err
}

func (s latentSource) Skip(batches int) { s.l.Skip(batches) }

// held is the held-out set the trainer evaluates on: for a latent run the
// scaled latents of its first heldLatents images (so the evaluation's
// PSNR is of latents, not pixels).
func (r *latentRun) held(d *data.Dataset) (*data.Dataset, error) {
	if r.ref == nil || d == nil {
		return d, nil
	}
	n := min(d.N, heldLatents)
	per := d.C * d.H * d.W
	out := &data.Dataset{N: n, C: r.ref.LatentChannels, H: r.ref.LatentSize, W: r.ref.LatentSize,
		NumClasses: d.NumClasses, ClassNames: d.ClassNames, Source: d.Source}
	if d.Labels != nil {
		out.Labels = d.Labels[:n]
	}
	for lo := 0; lo < n; lo += 64 {
		hi := min(lo+64, n)
		z, err := r.encode(d.Images[lo*per:hi*per], hi-lo, true)
		if err != nil {
			return nil, err
		}
		out.Images = append(out.Images, z...)
	}
	return out, nil
}

// latent is what decodes the run's samples (nil for pixels).
func (r *latentRun) latent() *pipeline.Latent { return r.l }

// samplerInfo is the pipeline Info of the run's model: images of the data's
// shape, sampled at the model's.
func samplerInfo(cfg runConfig) pipeline.Info {
	m := cfg.Model
	size, channels := dataShape(cfg)
	return pipeline.Info{Channels: channels, Size: size, LatentChannels: m.OutChannels, LatentSize: m.ImageSize,
		NumClasses: m.NumClasses, Target: cfg.Train.Target}
}

func (r *latentRun) close() {
	if r != nil && r.l != nil {
		r.l.Model.Close()
	}
}
