package autoencoder

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
)

// Block types: the only ones an AutoencoderKL of this package is built
// from (diffusers has others, for other autoencoders).
const (
	DownEncoderBlock2D = "DownEncoderBlock2D"
	UpDecoderBlock2D   = "UpDecoderBlock2D"
)

// Bounds on a configuration: far above any published autoencoder, low
// enough that a mistyped config fails here instead of in the allocator.
const (
	maxLevels   = 8
	maxChannels = 8192
	maxLayers   = 16
)

// ErrInvalidConfig is wrapped by every error of Config.Validate.
var ErrInvalidConfig = errors.New("autoencoder: invalid config")

// Config is the configuration of diffusers' AutoencoderKL, field for field
// under diffusers' config.json names, so that a config file maps onto it
// unchanged. It is also stored as JSON in this project's autoencoder
// checkpoints. Start from DefaultConfig (diffusers' constructor defaults):
// the zero Config does not validate.
type Config struct {
	// InChannels and OutChannels are the channels of the images encoded
	// and decoded.
	InChannels  int `json:"in_channels"`
	OutChannels int `json:"out_channels"`
	// LatentChannels is the number of channels of a latent; the encoder
	// predicts a mean and a log-variance for each.
	LatentChannels int `json:"latent_channels"`
	// BlockOutChannels are the widths of the encoder's levels (the decoder
	// runs them in reverse). Each level but the last halves the
	// resolution, so a latent is 2^(len-1) times smaller than its image.
	BlockOutChannels []int `json:"block_out_channels"`
	// LayersPerBlock is the number of residual blocks per encoder level;
	// each decoder level has one more.
	LayersPerBlock int `json:"layers_per_block"`
	// DownBlockTypes and UpBlockTypes name the block type of each level:
	// only DownEncoderBlock2D and UpDecoderBlock2D are supported.
	DownBlockTypes []string `json:"down_block_types"`
	UpBlockTypes   []string `json:"up_block_types"`
	// NormNumGroups is the number of GroupNorm groups everywhere; it must
	// divide every width.
	NormNumGroups int `json:"norm_num_groups"`
	// ActFn is the activation: only "silu".
	ActFn string `json:"act_fn"`
	// SampleSize is the image size the model was trained at (diffusers
	// uses it for tiling only; here it is information).
	SampleSize int `json:"sample_size"`
	// ScalingFactor and ShiftFactor (nil: 0) map a latent z to the space a
	// latent diffusion model is trained in: (z - shift) * scale (see
	// Model.ScaleLatents).
	ScalingFactor float64  `json:"scaling_factor"`
	ShiftFactor   *float64 `json:"shift_factor"`
	// LatentsMean and LatentsStd are per-channel latent statistics some
	// pipelines use instead of the scaling factor; they are kept, not
	// used by the model.
	LatentsMean []float64 `json:"latents_mean"`
	LatentsStd  []float64 `json:"latents_std"`
	// ForceUpcast tells diffusers' pipelines to run this VAE in float32;
	// it is kept for export and otherwise ignored.
	ForceUpcast bool `json:"force_upcast"`
	// MidBlockAddAttention puts self-attention in the middle blocks of the
	// encoder and the decoder.
	MidBlockAddAttention bool `json:"mid_block_add_attention"`
	// UseQuantConv and UsePostQuantConv add the 1x1 convolutions after the
	// encoder (quant_conv, on mean and log-variance) and before the
	// decoder (post_quant_conv).
	UseQuantConv     bool `json:"use_quant_conv"`
	UsePostQuantConv bool `json:"use_post_quant_conv"`
}

// DefaultConfig is diffusers' AutoencoderKL() with no arguments: one level
// of 64 channels, 4 latent channels, 32 GroupNorm groups.
func DefaultConfig() Config {
	return Config{
		InChannels: 3, OutChannels: 3, LatentChannels: 4,
		BlockOutChannels: []int{64}, LayersPerBlock: 1,
		DownBlockTypes: []string{DownEncoderBlock2D}, UpBlockTypes: []string{UpDecoderBlock2D},
		NormNumGroups: 32, ActFn: "silu", SampleSize: 32, ScalingFactor: 0.18215,
		ForceUpcast: true, MidBlockAddAttention: true, UseQuantConv: true, UsePostQuantConv: true,
	}
}

// Clone is a deep copy of c.
func (c Config) Clone() Config {
	c.BlockOutChannels = slices.Clone(c.BlockOutChannels)
	c.DownBlockTypes = slices.Clone(c.DownBlockTypes)
	c.UpBlockTypes = slices.Clone(c.UpBlockTypes)
	c.LatentsMean = slices.Clone(c.LatentsMean)
	c.LatentsStd = slices.Clone(c.LatentsStd)
	if c.ShiftFactor != nil {
		v := *c.ShiftFactor
		c.ShiftFactor = &v
	}
	return c
}

// Downscale is how many times smaller than its image a latent is:
// 2^(len(BlockOutChannels)-1). Images must have sides divisible by it.
func (c Config) Downscale() int64 { return 1 << (len(c.BlockOutChannels) - 1) }

// Shift is ShiftFactor, 0 when it is null.
func (c Config) Shift() float64 {
	if c.ShiftFactor == nil {
		return 0
	}
	return *c.ShiftFactor
}

// Validate reports every problem of c at once, or nil.
func (c Config) Validate() error {
	var p []string
	bad := func(format string, args ...any) { p = append(p, fmt.Sprintf(format, args...)) }
	channels := func(name string, v int) {
		if v <= 0 || v > maxChannels {
			bad("%s must be in [1, %d], got %d", name, maxChannels, v)
		}
	}
	channels("in_channels", c.InChannels)
	channels("out_channels", c.OutChannels)
	channels("latent_channels", c.LatentChannels)
	levels := len(c.BlockOutChannels)
	if levels == 0 || levels > maxLevels {
		bad("block_out_channels needs 1 to %d levels, got %d", maxLevels, levels)
	}
	if c.NormNumGroups <= 0 || c.NormNumGroups > maxChannels {
		bad("norm_num_groups must be in [1, %d], got %d", maxChannels, c.NormNumGroups)
	}
	for i, w := range c.BlockOutChannels {
		switch {
		case w <= 0 || w > maxChannels:
			bad("block_out_channels[%d] must be in [1, %d], got %d", i, maxChannels, w)
		case c.NormNumGroups > 0 && w%c.NormNumGroups != 0:
			bad("block_out_channels[%d] = %d is not divisible by norm_num_groups %d", i, w, c.NormNumGroups)
		}
	}
	if c.LayersPerBlock <= 0 || c.LayersPerBlock > maxLayers {
		bad("layers_per_block must be in [1, %d], got %d", maxLayers, c.LayersPerBlock)
	}
	blockTypes := func(name string, types []string, want string) {
		if len(types) != levels {
			bad("%s has %d entries, block_out_channels %d: one per level", name, len(types), levels)
		}
		for i, t := range types {
			if t != want {
				bad("%s[%d] %q is not supported (only %s is)", name, i, t, want)
				return
			}
		}
	}
	blockTypes("down_block_types", c.DownBlockTypes, DownEncoderBlock2D)
	blockTypes("up_block_types", c.UpBlockTypes, UpDecoderBlock2D)
	if c.ActFn != "silu" {
		bad("act_fn %q is not supported (only silu is)", c.ActFn)
	}
	if c.SampleSize <= 0 {
		bad("sample_size must be positive, got %d", c.SampleSize)
	}
	if !(c.ScalingFactor > 0) || math.IsInf(c.ScalingFactor, 0) {
		bad("scaling_factor must be positive and finite, got %g", c.ScalingFactor)
	}
	if c.ShiftFactor != nil && (math.IsNaN(*c.ShiftFactor) || math.IsInf(*c.ShiftFactor, 0)) {
		bad("shift_factor must be finite or null, got %g", *c.ShiftFactor)
	}
	stats := func(name string, v []float64) {
		if v != nil && len(v) != c.LatentChannels {
			bad("%s has %d entries, latent_channels is %d", name, len(v), c.LatentChannels)
		}
		for i, x := range v {
			if math.IsNaN(x) || math.IsInf(x, 0) {
				bad("%s[%d] is not finite", name, i)
				break
			}
		}
	}
	stats("latents_mean", c.LatentsMean)
	stats("latents_std", c.LatentsStd)
	if len(p) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, strings.Join(p, "; "))
	}
	return nil
}
