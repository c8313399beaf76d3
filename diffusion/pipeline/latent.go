package pipeline

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/ddpm-go/ddpm/diffusion/autoencoder"
	"github.com/ddpm-go/ddpm/diffusion/checkpoint"
	"github.com/ddpm-go/ddpm/diffusion/diffusers"
	"github.com/ddpm-go/ddpm/diffusion/nn"
	"github.com/ddpm-go/ddpm/torch"
)

// Latent is the autoencoder that turns a latent diffusion model's samples
// into images: a sample x decodes as Decode(x/ScalingFactor + ShiftFactor).
type Latent struct {
	Model         *autoencoder.Model
	ScalingFactor float64
	ShiftFactor   float64
}

// LoadAutoencoder loads the autoencoder at path on dev in float32: an
// autoencoder checkpoint (ddpm train-autoencoder), the newest checkpoint
// of a run directory of one, or a diffusers AutoencoderKL folder (the
// folder itself or its vae/). For a checkpoint, w picks the weights; ""
// picks its EMA weights when it has them, else its training weights. It
// returns the file or folder it read and the weights it used ("" for a
// diffusers folder).
func LoadAutoencoder(path string, w checkpoint.Weights, dev torch.Device) (*autoencoder.Model, string, checkpoint.Weights, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, "", "", fmt.Errorf("pipeline: autoencoder: %w", err)
	}
	file := path
	if st.IsDir() {
		ckpts, err := checkpoint.List(path)
		if err != nil {
			return nil, "", "", fmt.Errorf("pipeline: autoencoder: %w", err)
		}
		if len(ckpts) == 0 {
			m, err := diffusers.LoadAutoencoder(path, dev)
			if err != nil {
				return nil, "", "", fmt.Errorf("pipeline: autoencoder %s is neither a run directory of ddpm train-autoencoder nor an AutoencoderKL folder: %w", path, err)
			}
			return m, path, "", nil
		}
		file = ckpts[len(ckpts)-1]
	}
	if w == "" {
		meta, err := autoencoder.ReadCheckpointMeta(file)
		if err != nil {
			return nil, "", "", fmt.Errorf("pipeline: %w", err)
		}
		if w = checkpoint.Raw; meta.HasEMA {
			w = checkpoint.EMA
		}
	}
	m, _, err := autoencoder.LoadCheckpoint(file, w, dev)
	if err != nil {
		return nil, "", "", fmt.Errorf("pipeline: %w", err)
	}
	if err := CheckFinite(m.Params()); err != nil {
		m.Close()
		return nil, "", "", fmt.Errorf("pipeline: autoencoder %s: %w", file, err)
	}
	return m, file, w, nil
}

// LoadLatent loads the autoencoder that ref records for the latent model
// of ckpt (a checkpoint, or a run's configuration file): at ref's path as
// given if that exists, else at its RunPath relative to ckpt's folder. It
// fails naming the path when the autoencoder is missing, does not load,
// makes latents of another shape than ref's, or holds other weights than
// ref's fingerprint. The caller closes the model.
func LoadLatent(ckpt string, ref checkpoint.Autoencoder, dev torch.Device) (*Latent, error) {
	tried := []string{ref.Path}
	if ref.RunPath != "" && !filepath.IsAbs(ref.RunPath) {
		tried = append(tried, filepath.Join(filepath.Dir(ckpt), ref.RunPath))
	}
	path := ""
	for _, p := range tried {
		if _, err := os.Stat(p); err == nil {
			path = p
			break
		}
	}
	want := fmt.Sprintf("latents %dx%dx%d of %dx%dx%d images", ref.LatentChannels, ref.LatentSize, ref.LatentSize,
		ref.ImageChannels, ref.ImageSize, ref.ImageSize)
	if path == "" {
		where := tried[0]
		if len(tried) > 1 {
			where = fmt.Sprintf("%s (nor %s)", tried[0], tried[1])
		}
		return nil, fmt.Errorf("pipeline: %s is a latent model and needs its autoencoder (%s), which is missing: no %s", ckpt, want, where)
	}
	m, _, _, err := LoadAutoencoder(path, ref.Weights, dev)
	if err != nil {
		return nil, fmt.Errorf("pipeline: %s needs the autoencoder %s, which does not load: %w", ckpt, path, err)
	}
	cfg := m.Config()
	down := int(cfg.Downscale())
	if cfg.LatentChannels != ref.LatentChannels || cfg.OutChannels != ref.ImageChannels || ref.LatentSize*down != ref.ImageSize {
		m.Close()
		return nil, fmt.Errorf("pipeline: %s expects an autoencoder making %s, but %s makes latents of %d channels, %d times smaller than %d-channel images",
			ckpt, want, path, cfg.LatentChannels, down, cfg.OutChannels)
	}
	if ref.Fingerprint != "" {
		got, err := nn.Fingerprint(m.Params())
		if err != nil {
			m.Close()
			return nil, fmt.Errorf("pipeline: %w", err)
		}
		if got != ref.Fingerprint {
			m.Close()
			return nil, fmt.Errorf("pipeline: %s was trained on the latents of other autoencoder weights than %s holds now (the file was replaced or trained on?); give it the autoencoder it was trained with", ckpt, path)
		}
	}
	return &Latent{Model: m, ScalingFactor: ref.ScalingFactor, ShiftFactor: ref.ShiftFactor}, nil
}

// checkLatent checks that l decodes samples of info's latent shape into
// images of its image shape.
func checkLatent(l *Latent, info Info) error {
	if l.Model == nil || l.ScalingFactor == 0 {
		return errors.New("pipeline: a Latent needs a model and a non-zero scaling factor")
	}
	cfg := l.Model.Config()
	if down := int(cfg.Downscale()); cfg.LatentChannels != info.LatentChannels || cfg.OutChannels != info.Channels ||
		info.LatentSize*down != info.Size {
		return fmt.Errorf("pipeline: the autoencoder decodes %d-channel latents to %d-channel images %d times larger; the model samples %dx%dx%d latents for %dx%dx%d images",
			cfg.LatentChannels, cfg.OutChannels, down, info.LatentChannels, info.LatentSize, info.LatentSize,
			info.Channels, info.Size, info.Size)
	}
	return nil
}

// Pixels turns a finished batch x of samples (on the pipeline's device)
// into pixel values in [-1, 1] on the host, as the package's Pixels does;
// a latent model's samples are decoded first (unscaled, then the
// autoencoder's Decode, in float32).
func (p *Pipeline) Pixels(x *torch.Tensor) ([]float32, error) {
	if p.latent == nil {
		return Pixels(x)
	}
	s := torch.NewScope(torch.Inference)
	defer s.Close()
	l := p.latent
	img := l.Model.Decode(s, s.AddScalar(s.DivScalar(x, l.ScalingFactor), l.ShiftFactor))
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("decoding the latents: %w", err)
	}
	return Pixels(img)
}
