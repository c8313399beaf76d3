package checkpoint

import (
	"fmt"
	"math"
)

// Autoencoder is what a latent diffusion checkpoint records of the
// autoencoder its model was trained with (the "autoencoder" metadata key,
// JSON): where it is, which of its weights, the shapes on both sides and
// the map between its latents z and the latents x the model works in,
// x = (z - ShiftFactor) * ScalingFactor.
type Autoencoder struct {
	// Path is the autoencoder as given to ddpm train: an autoencoder
	// checkpoint (ddpm train-autoencoder), a run directory of one, or a
	// diffusers AutoencoderKL folder.
	Path string `json:"path"`
	// RunPath is the same file or folder relative to the run directory
	// (the checkpoint's folder), "" when there is no such path; it finds
	// the autoencoder when the two are moved together.
	RunPath string `json:"run_path,omitempty"`
	// Weights are the weights of an autoencoder checkpoint that were used
	// ("" for a diffusers folder).
	Weights Weights `json:"weights,omitempty"`
	// ImageChannels and ImageSize are the decoded images' shape.
	ImageChannels int `json:"image_channels"`
	ImageSize     int `json:"image_size"`
	// LatentChannels and LatentSize are the latents' shape, the model's.
	LatentChannels int `json:"latent_channels"`
	LatentSize     int `json:"latent_size"`
	// ScalingFactor and ShiftFactor map latents to the model's space.
	ScalingFactor float64 `json:"scaling_factor"`
	ShiftFactor   float64 `json:"shift_factor"`
	// Fingerprint is nn.Fingerprint of the autoencoder's weights that were
	// used: other weights found at Path later (a run trained on, a file
	// replaced) are refused. Empty in files from before it was recorded.
	Fingerprint string `json:"fingerprint,omitempty"`
}

// Validate reports the first problem of a, or nil.
func (a Autoencoder) Validate() error {
	switch {
	case a.Path == "":
		return fmt.Errorf("checkpoint: autoencoder: no path")
	case a.Weights != "" && a.Weights != EMA && a.Weights != Raw:
		return fmt.Errorf("checkpoint: autoencoder: weights %q (want %q or %q)", a.Weights, EMA, Raw)
	case a.ImageChannels < 1 || a.ImageSize < 1 || a.LatentChannels < 1 || a.LatentSize < 1:
		return fmt.Errorf("checkpoint: autoencoder: images %dx%dx%d, latents %dx%dx%d: every size must be positive",
			a.ImageChannels, a.ImageSize, a.ImageSize, a.LatentChannels, a.LatentSize, a.LatentSize)
	case a.ImageSize%a.LatentSize != 0:
		return fmt.Errorf("checkpoint: autoencoder: image size %d is not a multiple of the latent size %d", a.ImageSize, a.LatentSize)
	case a.ScalingFactor == 0 || math.IsNaN(a.ScalingFactor) || math.IsInf(a.ScalingFactor, 0) ||
		math.IsNaN(a.ShiftFactor) || math.IsInf(a.ShiftFactor, 0):
		return fmt.Errorf("checkpoint: autoencoder: scaling factor %g and shift factor %g must be finite, the scaling factor non-zero",
			a.ScalingFactor, a.ShiftFactor)
	}
	return nil
}
