package main

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/ddpm-go/ddpm/diffusion/autoencoder"
	"github.com/ddpm-go/ddpm/diffusion/nn"
	"github.com/ddpm-go/ddpm/torch"
)

// autoencoderInfo is what info prints for a checkpoint of
// train-autoencoder.
type autoencoderInfo struct {
	Source      string                  `json:"source"`
	Autoencoder autoencoder.Config      `json:"autoencoder"`
	Params      int64                   `json:"params"`
	Step        int64                   `json:"step"`
	EMA         bool                    `json:"ema"`
	Train       autoencoder.TrainConfig `json:"train"`
	Data        string                  `json:"data,omitempty"`
}

// printAutoencoderInfo describes the autoencoder checkpoint at path.
func printAutoencoderInfo(w io.Writer, path string, asJSON bool) error {
	meta, err := autoencoder.ReadCheckpointMeta(path)
	if err != nil {
		return err
	}
	// The parameter count of the configuration, from a model built on the
	// CPU with libtorch's default initialisation (nothing is loaded).
	m, err := autoencoder.New(meta.Model, torch.CPU, torch.Float32, nil)
	if err != nil {
		return err
	}
	info := autoencoderInfo{Source: path, Autoencoder: meta.Model, Params: nn.NumParams(m.Params()), Step: meta.Step,
		EMA: meta.HasEMA, Train: meta.Train, Data: meta.Data}
	m.Close()
	if asJSON {
		return printJSON(w, info)
	}
	a := info.Autoencoder
	side := int64(a.SampleSize) / a.Downscale()
	train, err := json.Marshal(info.Train)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "source        %s\n", info.Source)
	fmt.Fprintf(w, "autoencoder   %dx%dx%d images to %dx%dx%d latents (AutoencoderKL; block channels %v, %d layers per block, %d groups)\n",
		a.InChannels, a.SampleSize, a.SampleSize, a.LatentChannels, side, side, a.BlockOutChannels, a.LayersPerBlock, a.NormNumGroups)
	fmt.Fprintf(w, "parameters    %d (%s)\n", info.Params, humanCount(info.Params))
	fmt.Fprintf(w, "step          %d (EMA weights: %t)\n", info.Step, info.EMA)
	fmt.Fprintf(w, "train         %s\n", train)
	fmt.Fprintf(w, "data          %s\n", info.Data)
	return nil
}
