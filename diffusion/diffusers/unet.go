package diffusers

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/ddpm-go/ddpm/diffusion/nn"
	"github.com/ddpm-go/ddpm/diffusion/unet"
	"github.com/ddpm-go/ddpm/torch"
)

// UNetConfig is the config.json of a diffusers UNet2DModel: every field of
// the published DDPM models and of diffusers' constructor, under diffusers'
// names. Pointer fields distinguish null from a value.
type UNetConfig struct {
	ClassName            string   `json:"_class_name"`
	DiffusersVersion     string   `json:"_diffusers_version,omitempty"`
	SampleSize           int      `json:"sample_size"`
	InChannels           int      `json:"in_channels"`
	OutChannels          int      `json:"out_channels"`
	CenterInputSample    bool     `json:"center_input_sample"`
	TimeEmbeddingType    string   `json:"time_embedding_type"`
	TimeEmbeddingDim     *int     `json:"time_embedding_dim"`
	FreqShift            float64  `json:"freq_shift"`
	FlipSinToCos         bool     `json:"flip_sin_to_cos"`
	DownBlockTypes       []string `json:"down_block_types"`
	MidBlockType         *string  `json:"mid_block_type"`
	UpBlockTypes         []string `json:"up_block_types"`
	BlockOutChannels     []int    `json:"block_out_channels"`
	LayersPerBlock       int      `json:"layers_per_block"`
	MidBlockScaleFactor  float64  `json:"mid_block_scale_factor"`
	DownsamplePadding    int      `json:"downsample_padding"`
	DownsampleType       string   `json:"downsample_type"`
	UpsampleType         string   `json:"upsample_type"`
	Dropout              float64  `json:"dropout"`
	ActFn                string   `json:"act_fn"`
	AttentionHeadDim     *int     `json:"attention_head_dim"`
	NormNumGroups        int      `json:"norm_num_groups"`
	AttnNormNumGroups    *int     `json:"attn_norm_num_groups"`
	NormEps              float64  `json:"norm_eps"`
	ResnetTimeScaleShift string   `json:"resnet_time_scale_shift"`
	AddAttention         bool     `json:"add_attention"`
	ClassEmbedType       *string  `json:"class_embed_type"`
	NumClassEmbeds       *int     `json:"num_class_embeds"`
	NumTrainTimesteps    *int     `json:"num_train_timesteps"`
	// NullLabel, written by this project's exporter, says that the last
	// class embedding is the null label of classifier-free guidance
	// (diffusers ignores the key).
	NullLabel *bool `json:"ddpm_go_null_label,omitempty"`
}

// unetDefaults are the UNet2DModel constructor's defaults, for fields a
// config file leaves out.
func unetDefaults() UNetConfig {
	heads, mid := 8, "UNetMidBlock2D"
	return UNetConfig{
		AttentionHeadDim: &heads, MidBlockType: &mid,
		InChannels: 3, OutChannels: 3, TimeEmbeddingType: "positional", FlipSinToCos: true,
		DownBlockTypes:   []string{"DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"},
		UpBlockTypes:     []string{"AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"},
		BlockOutChannels: []int{224, 448, 672, 896}, LayersPerBlock: 2, MidBlockScaleFactor: 1,
		DownsamplePadding: 1, DownsampleType: "conv", UpsampleType: "conv", ActFn: "silu",
		NormNumGroups: 32, NormEps: 1e-5, ResnetTimeScaleShift: "default", AddAttention: true,
	}
}

// ReadUNetConfig reads a UNet2DModel config.json. A field this package does
// not know is an error naming it: silently ignoring it could change the
// network.
func ReadUNetConfig(path string) (UNetConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return UNetConfig{}, fmt.Errorf("diffusers: %w", err)
	}
	c, err := ParseUNetConfig(b)
	if err != nil {
		return UNetConfig{}, fmt.Errorf("%w (in %s)", err, path)
	}
	return c, nil
}

// ParseUNetConfig is ReadUNetConfig on the bytes of a config.json.
func ParseUNetConfig(b []byte) (UNetConfig, error) {
	c := unetDefaults()
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return UNetConfig{}, fmt.Errorf("diffusers: UNet2DModel config: %w", err)
	}
	if c.ClassName != "UNet2DModel" {
		return UNetConfig{}, fmt.Errorf("diffusers: _class_name %q is not a UNet2DModel", c.ClassName)
	}
	return c, nil
}

// Model turns the config into the project's U-Net configuration, or says
// which field it cannot express.
func (c UNetConfig) Model() (unet.Config, error) {
	bad := func(field string, v any, why string) (unet.Config, error) {
		return unet.Config{}, fmt.Errorf("diffusers: UNet2DModel %s = %v is not supported: %s", field, v, why)
	}
	switch {
	case c.TimeEmbeddingType != "positional":
		return bad("time_embedding_type", c.TimeEmbeddingType, "only the sinusoidal (positional) embedding is")
	case c.ActFn != "silu":
		return bad("act_fn", c.ActFn, "only silu is")
	case c.CenterInputSample:
		return bad("center_input_sample", true, "inputs are taken as they are")
	case c.MidBlockScaleFactor != 1:
		return bad("mid_block_scale_factor", c.MidBlockScaleFactor, "only 1 is")
	case c.ResnetTimeScaleShift != "default":
		return bad("resnet_time_scale_shift", c.ResnetTimeScaleShift, "only default (additive) is")
	case c.DownsampleType != "conv":
		return bad("downsample_type", c.DownsampleType, "only conv is")
	case c.UpsampleType != "conv":
		return bad("upsample_type", c.UpsampleType, "only conv is")
	case !c.AddAttention:
		return bad("add_attention", false, "the middle block always has attention")
	case c.MidBlockType == nil:
		return bad("mid_block_type", "null", "the U-Net always has a middle block")
	case *c.MidBlockType != "UNetMidBlock2D":
		return bad("mid_block_type", *c.MidBlockType, "only UNetMidBlock2D is")
	case c.ClassEmbedType != nil:
		return bad("class_embed_type", *c.ClassEmbedType, "only null (a label embedding) is")
	case c.AttnNormNumGroups != nil && *c.AttnNormNumGroups != c.NormNumGroups:
		return bad("attn_norm_num_groups", *c.AttnNormNumGroups, "attention uses norm_num_groups")
	case c.DownsamplePadding != 0 && c.DownsamplePadding != 1:
		return bad("downsample_padding", c.DownsamplePadding, "only 0 and 1 are")
	case len(c.BlockOutChannels) == 0 || c.BlockOutChannels[0] <= 0:
		return bad("block_out_channels", c.BlockOutChannels, "it needs a positive first width")
	case len(c.DownBlockTypes) != len(c.BlockOutChannels) || len(c.UpBlockTypes) != len(c.BlockOutChannels):
		return bad("down_block_types/up_block_types", fmt.Sprint(c.DownBlockTypes, c.UpBlockTypes), "one of each per block_out_channels entry")
	}
	base := c.BlockOutChannels[0]
	m := unet.Config{
		ImageSize: c.SampleSize, InChannels: c.InChannels, OutChannels: c.OutChannels,
		BaseChannels: base, NumResBlocks: c.LayersPerBlock, Dropout: c.Dropout,
		NormGroups: c.NormNumGroups, NormEps: c.NormEps, NumHeads: 1,
		SinFirst: !c.FlipSinToCos, FreqShift: c.FreqShift, AsymmetricDownsample: c.DownsamplePadding == 0,
	}
	if c.TimeEmbeddingDim != nil {
		m.TimeEmbedDim = *c.TimeEmbeddingDim
	}
	if c.AttentionHeadDim != nil {
		m.HeadChannels = *c.AttentionHeadDim
	} else {
		m.HeadChannels = 0 // null: one head as wide as the channels (a missing key is 8)
	}
	for i, w := range c.BlockOutChannels {
		if w%base != 0 {
			return bad("block_out_channels", c.BlockOutChannels, "every width must be a multiple of the first")
		}
		m.ChannelMult = append(m.ChannelMult, w/base)
		down, up := c.DownBlockTypes[i], c.UpBlockTypes[len(c.UpBlockTypes)-1-i]
		downAttn, err := blockAttention("down_block_types", down, "DownBlock2D", "AttnDownBlock2D")
		if err != nil {
			return unet.Config{}, err
		}
		upAttn, err := blockAttention("up_block_types", up, "UpBlock2D", "AttnUpBlock2D")
		if err != nil {
			return unet.Config{}, err
		}
		if downAttn != upAttn {
			return bad("up_block_types", c.UpBlockTypes, fmt.Sprintf("attention must mirror down_block_types (level %d: %s, %s)", i, down, up))
		}
		if downAttn {
			m.AttentionResolutions = append(m.AttentionResolutions, c.SampleSize>>i)
		}
	}
	if c.NumClassEmbeds != nil && *c.NumClassEmbeds > 0 {
		m.NumClasses, m.NoNullLabel = *c.NumClassEmbeds, true
		if c.NullLabel != nil && *c.NullLabel {
			if *c.NumClassEmbeds < 2 {
				return bad("num_class_embeds", *c.NumClassEmbeds, "with a null label it needs at least 2")
			}
			m.NumClasses, m.NoNullLabel = *c.NumClassEmbeds-1, false
		}
	}
	if err := m.Validate(); err != nil {
		return unet.Config{}, fmt.Errorf("diffusers: %w", err)
	}
	return m.WithDefaults(), nil
}

func blockAttention(field, v, plain, attn string) (bool, error) {
	switch v {
	case plain:
		return false, nil
	case attn:
		return true, nil
	}
	return false, fmt.Errorf("diffusers: UNet2DModel %s entry %q is not supported (only %s and %s are)", field, v, plain, attn)
}

// The weight names of the project's U-Net and of diffusers' UNet2DModel.
// Level i of the project's "up" path is diffusers' up_blocks[L-1-i].
var (
	ourBlock   = regexp.MustCompile(`^(down|up)\.(\d+)\.(block|attn)\.(\d+)\.(.+)$`)
	ourSampler = regexp.MustCompile(`^(down|up)\.(\d+)\.(downsample|upsample)\.conv\.(.+)$`)
	ourMid     = regexp.MustCompile(`^mid\.(block_1|attn_1|block_2)\.(.+)$`)
)

var (
	resnetNames = map[string]string{"norm1": "norm1", "conv1": "conv1", "temb_proj": "time_emb_proj",
		"norm2": "norm2", "conv2": "conv2", "nin_shortcut": "conv_shortcut"}
	attnNames = map[string]string{"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
	topNames  = map[string]string{"temb.dense.0": "time_embedding.linear_1", "temb.dense.1": "time_embedding.linear_2",
		"label_emb": "class_embedding", "conv_in": "conv_in", "norm_out": "conv_norm_out", "conv_out": "conv_out"}
	// legacyAttn are the names of diffusers' former AttentionBlock.
	legacyAttn = map[string]string{"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
)

// DiffusersName maps a parameter name of the project's U-Net with levels
// levels to its name in a UNet2DModel state dict, and reports whether the
// tensor is an attention projection (a 1x1 convolution here, a Linear
// there, so its weight drops the two trailing unit dimensions).
func DiffusersName(name string, levels int) (string, bool, error) {
	split := func(rest string) (string, string) {
		i := strings.LastIndex(rest, ".")
		return rest[:i], rest[i+1:]
	}
	if m := ourBlock.FindStringSubmatch(name); m != nil {
		lvl, _ := strconv.Atoi(m[2])
		block := "down_blocks." + m[2]
		if m[1] == "up" {
			block = "up_blocks." + strconv.Itoa(levels-1-lvl)
		}
		layer, param := split(m[5])
		if m[3] == "block" {
			if n, ok := resnetNames[layer]; ok {
				return block + ".resnets." + m[4] + "." + n + "." + param, false, nil
			}
		} else if n, ok := attnNames[layer]; ok {
			return block + ".attentions." + m[4] + "." + n + "." + param, layer != "norm", nil
		}
	}
	if m := ourSampler.FindStringSubmatch(name); m != nil {
		lvl, _ := strconv.Atoi(m[2])
		if m[1] == "down" {
			return "down_blocks." + m[2] + ".downsamplers.0.conv." + m[4], false, nil
		}
		return "up_blocks." + strconv.Itoa(levels-1-lvl) + ".upsamplers.0.conv." + m[4], false, nil
	}
	if m := ourMid.FindStringSubmatch(name); m != nil {
		layer, param := split(m[2])
		switch m[1] {
		case "block_1", "block_2":
			idx := map[string]string{"block_1": "0", "block_2": "1"}[m[1]]
			if n, ok := resnetNames[layer]; ok {
				return "mid_block.resnets." + idx + "." + n + "." + param, false, nil
			}
		case "attn_1":
			if n, ok := attnNames[layer]; ok {
				return "mid_block.attentions.0." + n + "." + param, layer != "norm", nil
			}
		}
	}
	if i := strings.LastIndex(name, "."); i > 0 {
		if n, ok := topNames[name[:i]]; ok {
			return n + name[i:], false, nil
		}
	}
	return "", false, fmt.Errorf("diffusers: no UNet2DModel name for parameter %s", name)
}

// modernName rewrites the legacy attention names of older diffusers files
// (query, key, value, proj_attn) to the current ones, as diffusers' own
// loader does.
func modernName(name string) string {
	parts := strings.Split(name, ".")
	for i, p := range parts {
		if n, ok := legacyAttn[p]; ok && i > 0 && parts[i-1] != "" && strings.Contains(name, "attentions.") {
			parts[i] = n
			return strings.Join(parts, ".")
		}
	}
	return name
}

// WeightsFile is the weights file of a model folder: the safetensors file,
// or an error that says how to convert a PyTorch pickle (.bin), which the
// project does not read.
func WeightsFile(dir string) (string, error) {
	st := filepath.Join(dir, "diffusion_pytorch_model.safetensors")
	if _, err := os.Stat(st); err == nil {
		return st, nil
	}
	bin := filepath.Join(dir, "diffusion_pytorch_model.bin")
	if _, err := os.Stat(bin); err == nil {
		return "", fmt.Errorf("diffusers: %s is a PyTorch pickle, which is not read here; convert it once with Python: "+
			"python3 -c \"import torch, safetensors.torch as s; s.save_file(torch.load('%s'), '%s')\"", bin, bin, st)
	}
	return "", fmt.Errorf("diffusers: %s has no diffusion_pytorch_model.safetensors", dir)
}

// LoadUNetWeights copies a UNet2DModel state dict (current or legacy
// attention names) into the project's U-Net u, checking every name and
// shape first: a missing, extra or misshapen tensor is an error naming it,
// and nothing is copied then.
func LoadUNetWeights(path string, u *unet.UNet) error {
	s := torch.NewScope(torch.NoGrad)
	defer s.Close()
	all, _, err := s.LoadSafetensors(path, torch.CPU)
	if err != nil {
		return fmt.Errorf("diffusers: %w", err)
	}
	theirs := make(map[string]*torch.Tensor, len(all))
	for k, v := range all {
		theirs[modernName(k)] = v
	}
	levels := len(u.Config().ChannelMult)
	ours := make(map[string]*torch.Tensor, len(all))
	var problems []string
	for _, p := range u.Params() {
		name, linear, err := DiffusersName(p.Name, levels)
		if err != nil {
			return err
		}
		t, ok := theirs[name]
		if !ok {
			problems = append(problems, "missing "+name)
			continue
		}
		delete(theirs, name)
		if linear && strings.HasSuffix(name, ".weight") {
			t = s.Reshape(t, append(t.Shape(), 1, 1)...)
		}
		ours[p.Name] = t
	}
	extra := make([]string, 0, len(theirs))
	for k := range theirs {
		extra = append(extra, "unexpected "+k)
	}
	slices.Sort(extra)
	problems = append(problems, extra...)
	if err := s.Err(); err != nil {
		return fmt.Errorf("diffusers: %s: %w", path, err)
	}
	if len(problems) > 0 {
		if len(problems) > 5 {
			problems = append(problems[:5], fmt.Sprintf("and %d more", len(problems)-5))
		}
		return fmt.Errorf("diffusers: %s does not fit its config.json: %s", path, strings.Join(problems, "; "))
	}
	if err := nn.LoadStateDict(u.Params(), ours); err != nil {
		return fmt.Errorf("diffusers: %s: %w", path, err)
	}
	return nil
}

// ErrNoUNet is returned for a folder that holds no UNet2DModel.
var ErrNoUNet = errors.New("no UNet2DModel (unet/config.json or config.json)")

// UNetDir finds the UNet2DModel of a diffusers folder: the unet/ folder of
// the multi-folder layout, or the folder itself in the flat legacy layout
// (google/ddpm-*).
func UNetDir(dir string) (string, error) {
	for _, d := range []string{filepath.Join(dir, "unet"), dir} {
		if _, err := os.Stat(filepath.Join(d, "config.json")); err == nil {
			return d, nil
		}
	}
	return "", fmt.Errorf("diffusers: %s: %w", dir, ErrNoUNet)
}

// LoadUNet builds the U-Net of a diffusers folder (either layout) on dev and
// loads its weights.
func LoadUNet(dir string, dev torch.Device) (*unet.UNet, error) {
	ud, err := UNetDir(dir)
	if err != nil {
		return nil, err
	}
	cfg, err := ReadUNetConfig(filepath.Join(ud, "config.json"))
	if err != nil {
		return nil, err
	}
	mc, err := cfg.Model()
	if err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, filepath.Join(ud, "config.json"))
	}
	weights, err := WeightsFile(ud)
	if err != nil {
		return nil, err
	}
	u, err := unet.New(mc, dev, torch.Float32, nil)
	if err != nil {
		return nil, fmt.Errorf("diffusers: %w", err)
	}
	if err := LoadUNetWeights(weights, u); err != nil {
		u.Close()
		return nil, err
	}
	return u, nil
}
