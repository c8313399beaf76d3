package diffusers

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/ddpm-go/ddpm/diffusion/nn"
	"github.com/ddpm-go/ddpm/diffusion/unet"
	"github.com/ddpm-go/ddpm/internal/atomicfile"
	"github.com/ddpm-go/ddpm/torch"
)

// Version is the diffusers version written into configs (_diffusers_version).
const Version = "0.40.0.dev0"

// UNetConfigFor is the UNet2DModel config of the project's U-Net, with every
// field written out (the constructor's defaults differ from the published
// configs, so nothing is left to them). It fails for a configuration
// diffusers cannot express: a fixed head count over attention blocks of
// different widths (diffusers fixes the channels per head instead).
func UNetConfigFor(m unet.Config) (UNetConfig, error) {
	m = m.WithDefaults()
	if err := m.Validate(); err != nil {
		return UNetConfig{}, fmt.Errorf("diffusers: %w", err)
	}
	c := unetDefaults()
	c.ClassName, c.DiffusersVersion = "UNet2DModel", Version
	c.SampleSize, c.InChannels, c.OutChannels = m.ImageSize, m.InChannels, m.OutChannels
	c.LayersPerBlock, c.Dropout = m.NumResBlocks, m.Dropout
	c.NormNumGroups, c.NormEps = m.NormGroups, m.NormEps
	c.FlipSinToCos, c.FreqShift = !m.SinFirst, m.FreqShift
	c.DownsamplePadding = 1
	if m.AsymmetricDownsample {
		c.DownsamplePadding = 0
	}
	ted := m.TimeEmbedDim
	c.TimeEmbeddingDim = &ted
	mid := "UNetMidBlock2D"
	c.MidBlockType = &mid
	c.BlockOutChannels, c.DownBlockTypes, c.UpBlockTypes = nil, nil, nil
	var attnWidths []int
	for i, mult := range m.ChannelMult {
		w := m.BaseChannels * mult
		c.BlockOutChannels = append(c.BlockOutChannels, w)
		attn := false
		for _, r := range m.AttentionResolutions {
			attn = attn || r == m.ImageSize>>i
		}
		if attn {
			c.DownBlockTypes = append(c.DownBlockTypes, "AttnDownBlock2D")
			c.UpBlockTypes = append([]string{"AttnUpBlock2D"}, c.UpBlockTypes...)
			attnWidths = append(attnWidths, w)
		} else {
			c.DownBlockTypes = append(c.DownBlockTypes, "DownBlock2D")
			c.UpBlockTypes = append([]string{"UpBlock2D"}, c.UpBlockTypes...)
		}
	}
	attnWidths = append(attnWidths, c.BlockOutChannels[len(c.BlockOutChannels)-1]) // the middle block
	// null: one head as wide as the channels (a missing key would be 8)
	c.AttentionHeadDim = nil
	switch {
	case m.HeadChannels > 0:
		hd := m.HeadChannels
		c.AttentionHeadDim = &hd
	case m.NumHeads > 1:
		hd := attnWidths[0] / m.NumHeads
		for _, w := range attnWidths {
			if w/m.NumHeads != hd {
				return UNetConfig{}, fmt.Errorf("diffusers: %d heads over attention blocks of %v channels cannot be written: "+
					"UNet2DModel fixes the channels per head (attention_head_dim)", m.NumHeads, attnWidths)
			}
		}
		c.AttentionHeadDim = &hd
	}
	if m.NumClasses > 0 {
		rows := m.LabelRows()
		c.NumClassEmbeds = &rows
		if !m.NoNullLabel {
			null := true
			c.NullLabel = &null
		}
	}
	return c, nil
}

// WriteJSON writes v as indented JSON to path, atomically.
func WriteJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("diffusers: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("diffusers: %w", err)
	}
	if err := atomicfile.Write(path, append(b, '\n')); err != nil {
		return fmt.Errorf("diffusers: %w", err)
	}
	return nil
}

// WriteUNet writes the U-Net cfg with weights params (named as the
// project's U-Net names them: the EMA copy of a checkpoint, say) as a
// UNet2DModel folder: dir/config.json and
// dir/diffusion_pytorch_model.safetensors under diffusers' names.
func WriteUNet(dir string, cfg unet.Config, params []nn.Param) error {
	c, err := UNetConfigFor(cfg)
	if err != nil {
		return err
	}
	s := torch.NewScope(torch.NoGrad)
	defer s.Close()
	levels := len(cfg.ChannelMult)
	tensors := make(map[string]*torch.Tensor, len(params))
	for _, p := range params {
		name, linear, err := DiffusersName(p.Name, levels)
		if err != nil {
			return err
		}
		t := p.T
		if linear && strings.HasSuffix(name, ".weight") {
			shape := t.Shape()
			t = s.Reshape(t, shape[:2]...)
		}
		tensors[name] = s.Contiguous(t)
	}
	if err := s.Err(); err != nil {
		return fmt.Errorf("diffusers: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("diffusers: %w", err)
	}
	if err := torch.SaveSafetensors(filepath.Join(dir, "diffusion_pytorch_model.safetensors"), tensors, map[string]string{"format": "pt"}); err != nil {
		return fmt.Errorf("diffusers: %w", err)
	}
	return WriteJSON(filepath.Join(dir, "config.json"), c)
}
