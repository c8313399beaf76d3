package autoencoder

import (
	"errors"
	"math"
	"strings"
	"testing"
)

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("DefaultConfig: %v", err)
	}
	if err := (Config{}).Validate(); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("zero Config: %v", err)
	}
	nan, inf := math.NaN(), math.Inf(1)
	for _, c := range []struct {
		edit func(*Config)
		want string
	}{
		{func(c *Config) { c.InChannels = 0 }, "in_channels"},
		{func(c *Config) { c.LatentChannels = 1 << 20 }, "latent_channels"},
		{func(c *Config) { c.BlockOutChannels = nil }, "block_out_channels needs"},
		{func(c *Config) { c.BlockOutChannels = []int{48} }, "not divisible by norm_num_groups 32"},
		{func(c *Config) { c.NormNumGroups = 0 }, "norm_num_groups"},
		{func(c *Config) { c.LayersPerBlock = 0 }, "layers_per_block"},
		{func(c *Config) { c.DownBlockTypes = []string{"AttnDownEncoderBlock2D"} }, `"AttnDownEncoderBlock2D" is not supported`},
		{func(c *Config) { c.UpBlockTypes = nil }, "up_block_types has 0 entries"},
		{func(c *Config) { c.ActFn = "gelu" }, "act_fn"},
		{func(c *Config) { c.SampleSize = -1 }, "sample_size"},
		{func(c *Config) { c.ScalingFactor = 0 }, "scaling_factor"},
		{func(c *Config) { c.ScalingFactor = inf }, "scaling_factor"},
		{func(c *Config) { c.ShiftFactor = &nan }, "shift_factor"},
		{func(c *Config) { c.LatentsMean = []float64{1, 2} }, "latents_mean has 2 entries"},
	} {
		cfg := DefaultConfig()
		c.edit(&cfg)
		err := cfg.Validate()
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v", c.want, err)
		}
	}
}

// Clone shares nothing with the original.
func TestConfigClone(t *testing.T) {
	shift := 0.1
	a := DefaultConfig()
	a.ShiftFactor, a.LatentsMean = &shift, []float64{1, 2, 3, 4}
	b := a.Clone()
	b.BlockOutChannels[0], b.DownBlockTypes[0], *b.ShiftFactor, b.LatentsMean[0] = 1, "x", 9, 9
	if a.BlockOutChannels[0] != 64 || a.DownBlockTypes[0] != DownEncoderBlock2D || shift != 0.1 || a.LatentsMean[0] != 1 {
		t.Errorf("Clone shares memory with the original: %+v", a)
	}
}
