package unet

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
)

// Config describes a U-Net. Zero values of NumHeads, NormGroups and
// TimeEmbedDim mean their defaults (see WithDefaults). It is stored in
// checkpoint metadata as JSON, so its field names are part of the file
// format.
type Config struct {
	// ImageSize is the height and width of the images the model is built
	// for; it must be divisible by 2^(len(ChannelMult)-1).
	ImageSize int `json:"image_size"`
	// InChannels and OutChannels are the channels of the input image and of
	// the prediction (the same for an epsilon-predicting model).
	InChannels  int `json:"in_channels"`
	OutChannels int `json:"out_channels"`
	// BaseChannels is the width of the first level; level i has
	// BaseChannels*ChannelMult[i] channels. It is also the size of the
	// sinusoidal timestep embedding, so it must be even.
	BaseChannels int   `json:"base_channels"`
	ChannelMult  []int `json:"channel_mult"`
	// NumResBlocks is the number of residual blocks per level on the way
	// down; the way up has one more per level.
	NumResBlocks int `json:"num_res_blocks"`
	// AttentionResolutions are the feature-map sizes (e.g. 16 for 16x16)
	// after whose residual blocks a self-attention block follows. The middle
	// of the network always has one.
	AttentionResolutions []int `json:"attention_resolutions"`
	// NumHeads is the number of attention heads (default 1); each head sees
	// channels/NumHeads channels.
	NumHeads int `json:"num_heads"`
	// Dropout is the dropout rate inside the residual blocks (in training).
	Dropout float64 `json:"dropout"`
	// NormGroups is the number of GroupNorm groups (default 32).
	NormGroups int `json:"norm_groups"`
	// NumClasses is the number of class labels for a class-conditional model
	// (0: unconditional). A conditional model has one more label embedding,
	// label NumClasses, the "null" label of classifier-free guidance.
	NumClasses int `json:"num_classes"`
	// TimeEmbedDim is the width of the timestep embedding MLP (default
	// 4*BaseChannels).
	TimeEmbedDim int `json:"time_embed_dim"`

	// The fields below express the conventions of other DDPM code bases
	// (the original TensorFlow DDPM, diffusers' UNet2DModel). Their zero
	// values are this project's own conventions, so the presets and every
	// checkpoint written before the fields existed are unchanged.

	// NormEps is GroupNorm's epsilon (default 1e-5, PyTorch's; the
	// original DDPM used 1e-6).
	NormEps float64 `json:"norm_eps,omitempty"`
	// HeadChannels, when > 0, fixes the channels per attention head (heads
	// = channels / HeadChannels at every attention block, diffusers'
	// attention_head_dim) instead of the head count NumHeads.
	HeadChannels int `json:"head_channels,omitempty"`
	// SinFirst orders the timestep embedding [sin, cos] (the original DDPM,
	// diffusers' flip_sin_to_cos false) instead of [cos, sin].
	SinFirst bool `json:"sin_first,omitempty"`
	// FreqShift is subtracted from half the embedding width in the spacing
	// of its frequencies (diffusers' freq_shift; the original DDPM: 1).
	FreqShift float64 `json:"freq_shift,omitempty"`
	// AsymmetricDownsample pads the stride-2 downsampling convolution's
	// input only at the bottom and right (the original DDPM, diffusers'
	// downsample_padding 0) instead of by 1 on every side.
	AsymmetricDownsample bool `json:"asymmetric_downsample,omitempty"`
	// NoNullLabel makes the label embedding exactly NumClasses rows, with
	// no null label (diffusers' num_class_embeds): such a model always
	// needs labels, and classifier-free guidance is not available.
	NoNullLabel bool `json:"no_null_label,omitempty"`
}

// Defaults of the optional Config fields.
const (
	DefaultNumHeads   = 1
	DefaultNormGroups = 32
	DefaultNormEps    = 1e-5
)

// ErrInvalidConfig is wrapped by every error of Validate.
var ErrInvalidConfig = errors.New("invalid U-Net config")

// WithDefaults returns a copy of c with zero NumHeads, NormGroups and
// TimeEmbedDim replaced by their defaults.
func (c Config) WithDefaults() Config {
	c = c.clone()
	if c.NumHeads == 0 {
		c.NumHeads = DefaultNumHeads
	}
	if c.NormGroups == 0 {
		c.NormGroups = DefaultNormGroups
	}
	if c.TimeEmbedDim == 0 {
		c.TimeEmbedDim = 4 * c.BaseChannels
	}
	if c.NormEps == 0 {
		c.NormEps = DefaultNormEps
	}
	return c
}

// heads is the number of attention heads of a block of ch channels.
func (c Config) heads(ch int64) int64 {
	if c.HeadChannels > 0 {
		return ch / int64(c.HeadChannels)
	}
	return int64(c.NumHeads)
}

// LabelRows is the number of rows of the label embedding: NumClasses plus
// the null label, or NumClasses with NoNullLabel (0 for an unconditional
// model).
func (c Config) LabelRows() int {
	if c.NumClasses == 0 || c.NoNullLabel {
		return c.NumClasses
	}
	return c.NumClasses + 1
}

func (c Config) clone() Config {
	c.ChannelMult = slices.Clone(c.ChannelMult)
	c.AttentionResolutions = slices.Clone(c.AttentionResolutions)
	return c
}

// Validate reports every problem of c (with defaults applied) in one error
// that wraps ErrInvalidConfig.
func (c Config) Validate() error {
	c = c.WithDefaults()
	var p []string
	bad := func(format string, args ...any) { p = append(p, fmt.Sprintf(format, args...)) }

	if c.ImageSize <= 0 {
		bad("image_size must be positive, got %d", c.ImageSize)
	}
	if c.InChannels <= 0 || c.OutChannels <= 0 {
		bad("in_channels and out_channels must be positive, got %d and %d", c.InChannels, c.OutChannels)
	}
	if c.BaseChannels <= 0 || c.BaseChannels%2 != 0 {
		bad("base_channels must be positive and even (it is the size of the sinusoidal timestep embedding), got %d", c.BaseChannels)
	}
	if len(c.ChannelMult) == 0 {
		bad("channel_mult needs at least one level")
	}
	for i, m := range c.ChannelMult {
		if m <= 0 {
			bad("channel_mult[%d] must be positive, got %d", i, m)
		}
	}
	if c.NumResBlocks <= 0 {
		bad("num_res_blocks must be at least 1, got %d", c.NumResBlocks)
	}
	if c.NumHeads < 0 {
		bad("num_heads must be positive, got %d", c.NumHeads)
	}
	if c.NormGroups < 0 {
		bad("norm_groups must be positive, got %d", c.NormGroups)
	}
	if c.TimeEmbedDim < 0 {
		bad("time_embed_dim must be positive, got %d", c.TimeEmbedDim)
	}
	if c.Dropout < 0 || c.Dropout >= 1 || math.IsNaN(c.Dropout) {
		bad("dropout must be in [0, 1), got %g", c.Dropout)
	}
	if c.NumClasses < 0 {
		bad("num_classes must be 0 (unconditional) or positive, got %d", c.NumClasses)
	}
	if !(c.NormEps > 0 && c.NormEps < 1) {
		bad("norm_eps must be in (0, 1), got %g", c.NormEps)
	}
	if c.HeadChannels < 0 {
		bad("head_channels must be 0 (use num_heads) or positive, got %d", c.HeadChannels)
	}
	if c.FreqShift < 0 || c.FreqShift >= float64(c.BaseChannels/2) || math.IsNaN(c.FreqShift) {
		bad("freq_shift must be in [0, base_channels/2), got %g", c.FreqShift)
	}
	if len(p) > 0 {
		return invalid(p)
	}

	levels := len(c.ChannelMult)
	if f := 1 << (levels - 1); c.ImageSize%f != 0 {
		bad("image_size %d must be divisible by %d = 2^(len(channel_mult)-1) to halve it %d times",
			c.ImageSize, f, levels-1)
	}
	var resolutions []int
	for i, m := range c.ChannelMult {
		ch := c.BaseChannels * m
		if ch%c.NormGroups != 0 {
			bad("level %d has %d channels (base_channels %d * channel_mult %d), not divisible by norm_groups %d",
				i, ch, c.BaseChannels, m, c.NormGroups)
		}
		resolutions = append(resolutions, c.ImageSize>>i)
	}
	last := c.BaseChannels * c.ChannelMult[levels-1]
	for _, r := range c.AttentionResolutions {
		i := slices.Index(resolutions, r)
		if i < 0 {
			bad("attention resolution %d is never reached (the levels have resolutions %v)", r, resolutions)
			continue
		}
		if ch := c.BaseChannels * c.ChannelMult[i]; !c.headsDivide(ch) {
			bad("attention at resolution %d has %d channels, not divisible into heads (%s)", r, ch, c.headRule())
		}
	}
	if !c.headsDivide(last) {
		bad("the middle attention has %d channels, not divisible into heads (%s)", last, c.headRule())
	}
	if len(p) > 0 {
		return invalid(p)
	}
	// Widths and depths are bounded first so that counting the parameters
	// cannot overflow; then the count, which a slip of the keyboard (a
	// hundred thousand residual blocks) would take past any machine's
	// memory while the model is built.
	for i, m := range c.ChannelMult {
		if ch := int64(c.BaseChannels) * int64(m); ch > MaxChannels {
			bad("level %d has %d channels, more than %d", i, ch, MaxChannels)
		}
	}
	if c.NumResBlocks > MaxResBlocks || levels > MaxLevels {
		bad("%d levels of %d residual blocks: at most %d levels of %d", levels, c.NumResBlocks, MaxLevels, MaxResBlocks)
	}
	if len(p) == 0 {
		if n := c.NumParams(); n > MaxParams {
			bad("%d parameters, more than %d", n, int64(MaxParams))
		}
	}
	if len(p) > 0 {
		return invalid(p)
	}
	return nil
}

// Bounds of a configuration: far past the largest published U-Nets (Stable
// Diffusion XL's has 2.6 billion parameters, at most 1280 channels and 10
// blocks a level), so that a typing slip is an error rather than a model
// that takes every byte of memory to build.
const (
	MaxChannels  = 1 << 14
	MaxResBlocks = 64
	MaxLevels    = 12
	MaxParams    = 8e9
)

func (c Config) headsDivide(ch int) bool {
	if c.HeadChannels > 0 {
		return ch%c.HeadChannels == 0
	}
	return c.NumHeads > 0 && ch%c.NumHeads == 0
}

func (c Config) headRule() string {
	if c.HeadChannels > 0 {
		return fmt.Sprintf("head_channels %d", c.HeadChannels)
	}
	return fmt.Sprintf("num_heads %d", c.NumHeads)
}

func invalid(problems []string) error {
	return fmt.Errorf("%w: %s", ErrInvalidConfig, strings.Join(problems, "; "))
}

// presets are the named configurations.
var presets = map[string]Config{
	// The DDPM paper's CIFAR-10 model (Ho et al. 2020): 35.7M parameters.
	"cifar10": {
		ImageSize: 32, InChannels: 3, OutChannels: 3,
		BaseChannels: 128, ChannelMult: []int{1, 2, 2, 2}, NumResBlocks: 2,
		AttentionResolutions: []int{16}, NumHeads: 1, Dropout: 0.1,
		NormGroups: 32, TimeEmbedDim: 512,
	},
	// A model for 32x32 grayscale images (Fashion-MNIST padded from 28x28)
	// that trains on a CPU: the CIFAR-10 layout at a quarter of the width,
	// one residual block per level and attention at 8x8 only (1.5M
	// parameters, 0.5 GFLOP per image).
	"small": {
		ImageSize: 32, InChannels: 1, OutChannels: 1,
		BaseChannels: 32, ChannelMult: []int{1, 2, 2, 2}, NumResBlocks: 1,
		AttentionResolutions: []int{8}, NumHeads: 1, Dropout: 0.1,
		NormGroups: 8, TimeEmbedDim: 128,
	},
	// A very small model for tests.
	"tiny": {
		ImageSize: 16, InChannels: 1, OutChannels: 1,
		BaseChannels: 16, ChannelMult: []int{1, 2}, NumResBlocks: 1,
		AttentionResolutions: []int{8}, NumHeads: 1, Dropout: 0.1,
		NormGroups: 4, TimeEmbedDim: 64,
	},
}

// PresetNames lists the names Preset accepts, sorted.
func PresetNames() []string {
	names := make([]string, 0, len(presets))
	for n := range presets {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Preset returns the named configuration (see PresetNames).
func Preset(name string) (Config, error) {
	c, ok := presets[strings.ToLower(name)]
	if !ok {
		return Config{}, fmt.Errorf("unknown U-Net preset %q (want one of %s)", name, strings.Join(PresetNames(), ", "))
	}
	return c.clone(), nil
}
