package unet

import (
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestPresets(t *testing.T) {
	if got, want := PresetNames(), []string{"cifar10", "small", "tiny"}; !slices.Equal(got, want) {
		t.Fatalf("PresetNames = %v, want %v", got, want)
	}
	for _, name := range PresetNames() {
		c, err := Preset(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		// Presets are copies: changing one does not change the next.
		c.ChannelMult[0] = 99
		if d, _ := Preset(name); d.ChannelMult[0] == 99 {
			t.Errorf("%s: Preset returned shared slices", name)
		}
	}
	if _, err := Preset("imagenet"); err == nil || !strings.Contains(err.Error(), "cifar10, small, tiny") {
		t.Errorf("unknown preset: error %v, want one listing the names", err)
	}
}

// The DDPM paper's CIFAR-10 model, field by field.
func TestCIFAR10Preset(t *testing.T) {
	c, err := Preset("cifar10")
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		ImageSize: 32, InChannels: 3, OutChannels: 3, BaseChannels: 128,
		ChannelMult: []int{1, 2, 2, 2}, NumResBlocks: 2, AttentionResolutions: []int{16},
		NumHeads: 1, Dropout: 0.1, NormGroups: 32, TimeEmbedDim: 512,
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("cifar10 = %+v, want %+v", c, want)
	}
}

func TestConfigJSON(t *testing.T) {
	c, _ := Preset("cifar10")
	c.NumClasses = 10
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{
		`"image_size":32`, `"in_channels":3`, `"out_channels":3`, `"base_channels":128`,
		`"channel_mult":[1,2,2,2]`, `"num_res_blocks":2`, `"attention_resolutions":[16]`,
		`"num_heads":1`, `"dropout":0.1`, `"norm_groups":32`, `"num_classes":10`, `"time_embed_dim":512`,
	} {
		if !strings.Contains(string(b), key) {
			t.Errorf("JSON %s lacks %s", b, key)
		}
	}
	var back Config
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, c) {
		t.Errorf("round trip gave %+v, want %+v", back, c)
	}
}

func TestWithDefaults(t *testing.T) {
	c := Config{ImageSize: 32, InChannels: 1, OutChannels: 1, BaseChannels: 64, ChannelMult: []int{1, 2}, NumResBlocks: 1}
	d := c.WithDefaults()
	if d.NumHeads != 1 || d.NormGroups != 32 || d.TimeEmbedDim != 256 {
		t.Errorf("defaults: heads %d groups %d temb %d, want 1, 32, 256", d.NumHeads, d.NormGroups, d.TimeEmbedDim)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("a config relying on defaults: %v", err)
	}
}

func TestValidate(t *testing.T) {
	tiny, _ := Preset("tiny")
	cases := []struct {
		name   string
		modify func(c *Config)
		want   string
	}{
		{"image size", func(c *Config) { c.ImageSize = 0 }, "image_size must be positive"},
		{"channels", func(c *Config) { c.InChannels = 0 }, "in_channels and out_channels must be positive"},
		{"odd base", func(c *Config) { c.BaseChannels = 15 }, "base_channels must be positive and even"},
		{"no levels", func(c *Config) { c.ChannelMult = nil }, "channel_mult needs at least one level"},
		{"zero mult", func(c *Config) { c.ChannelMult = []int{1, 0} }, "channel_mult[1] must be positive"},
		{"res blocks", func(c *Config) { c.NumResBlocks = 0 }, "num_res_blocks must be at least 1"},
		{"dropout", func(c *Config) { c.Dropout = 1 }, "dropout must be in [0, 1)"},
		{"classes", func(c *Config) { c.NumClasses = -1 }, "num_classes must be 0"},
		{"heads", func(c *Config) { c.NumHeads = -2 }, "num_heads must be positive"},
		{"divisible", func(c *Config) { c.ImageSize = 18; c.ChannelMult = []int{1, 2, 2} },
			"image_size 18 must be divisible by 4 = 2^(len(channel_mult)-1)"},
		{"groups", func(c *Config) { c.NormGroups = 5 }, "level 0 has 16 channels (base_channels 16 * channel_mult 1), not divisible by norm_groups 5"},
		{"unreachable attention", func(c *Config) { c.AttentionResolutions = []int{4} },
			"attention resolution 4 is never reached (the levels have resolutions [16 8])"},
		{"heads divide", func(c *Config) { c.NumHeads = 3 }, "not divisible into heads (num_heads 3)"},
		{"wide", func(c *Config) { c.BaseChannels = 1 << 30 }, "level 0 has 1073741824 channels, more than 16384"},
		{"deep", func(c *Config) { c.NumResBlocks = 100000 }, "2 levels of 100000 residual blocks: at most 12 levels of 64"},
		{"large", func(c *Config) { c.BaseChannels, c.NumResBlocks = 4096, 64 }, "parameters, more than 8000000000"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := tiny.clone()
			tc.modify(&c)
			err := c.Validate()
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("error %v does not wrap ErrInvalidConfig", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

// Validate lists all problems at once.
func TestValidateReportsEveryProblem(t *testing.T) {
	c := Config{ImageSize: -1, InChannels: 1, OutChannels: 1, BaseChannels: 3, ChannelMult: []int{1}, NumResBlocks: 0}
	err := c.Validate()
	for _, want := range []string{"image_size", "base_channels", "num_res_blocks"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not mention %s", err, want)
		}
	}
}
