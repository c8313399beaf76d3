package main

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/ddpm-go/ddpm/diffusion/autoencoder"
	"github.com/ddpm-go/ddpm/diffusion/checkpoint"
	"github.com/ddpm-go/ddpm/diffusion/diffusers"
	"github.com/ddpm-go/ddpm/diffusion/unet"
	"github.com/ddpm-go/ddpm/torch"
	"github.com/urfave/cli/v2"
)

var infoCommand = &cli.Command{
	Name:  "info",
	Usage: "describe a checkpoint, run, diffusers folder or preset: configuration, parameters, FLOPs, step (autoencoder runs too)",
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "run", Usage: "run directory (its newest checkpoint)"},
		&cli.StringFlag{Name: "model", Usage: "diffusers DDPMPipeline folder"},
		&cli.StringFlag{Name: "checkpoint", Usage: "checkpoint file (.safetensors)"},
		&cli.StringFlag{Name: "preset", Usage: "model preset: " + joinNames(unet.PresetNames())},
		&cli.BoolFlag{Name: "json", Usage: "print one JSON object"},
	},
	Action: runInfo,
}

// modelInfo is what info prints.
type modelInfo struct {
	Source        string          `json:"source"`
	Model         unet.Config     `json:"model"`
	Params        int64           `json:"params"`
	FLOPsPerImage int64           `json:"flops_per_image"`
	Step          *int64          `json:"step,omitempty"`
	Train         json.RawMessage `json:"train,omitempty"`
	Schedule      json.RawMessage `json:"schedule,omitempty"`
	Data          string          `json:"data,omitempty"`
	ClassNames    []string        `json:"class_names,omitempty"`
	// Autoencoder decodes a latent model's samples (nil for pixels).
	Autoencoder *checkpoint.Autoencoder `json:"autoencoder,omitempty"`
}

func runInfo(c *cli.Context) error {
	var info modelInfo
	if err := onlyOne(c, "preset", "model", "run", "checkpoint"); err != nil {
		return err
	}
	if name := c.String("preset"); name != "" {
		cfg, err := unet.Preset(name)
		if err != nil {
			return err
		}
		info.Source, info.Model = "preset "+name, cfg.WithDefaults()
	} else if dir := c.String("model"); dir != "" {
		f, err := diffusers.Load(dir, torch.CPU)
		if err != nil {
			return err
		}
		defer f.Close()
		sched, err := json.Marshal(f.Schedule)
		if err != nil {
			return err
		}
		info.Source, info.Model, info.Schedule = dir, f.UNet.Config(), sched
		info.Autoencoder = f.Autoencoder() // a latent model: its vae/ decodes the samples
	} else {
		path, err := checkpointPath(c)
		if err != nil {
			return fmt.Errorf("%w (or --preset NAME)", err)
		}
		if format, err := checkpoint.FormatOf(path); err != nil {
			return err
		} else if format == autoencoder.CheckpointFormat {
			return printAutoencoderInfo(c.App.Writer, path, c.Bool("json"))
		}
		meta, err := checkpoint.ReadMeta(path)
		if err != nil {
			return err
		}
		if meta.Model == nil {
			return fmt.Errorf("%s records no model configuration", path)
		}
		sched, err := json.Marshal(meta.Schedule)
		if err != nil {
			return err
		}
		info.Source, info.Model, info.Step = path, *meta.Model, &meta.Step
		info.Train, info.Schedule = meta.Train, sched
		info.Data, info.ClassNames, info.Autoencoder = meta.Data, meta.ClassNames, meta.Autoencoder
	}
	if err := info.Model.Validate(); err != nil {
		return err
	}
	info.Params, info.FLOPsPerImage = info.Model.NumParams(), info.Model.FLOPs()
	w := c.App.Writer
	if c.Bool("json") {
		return printJSON(w, info)
	}
	m := info.Model
	fmt.Fprintf(w, "source        %s\n", info.Source)
	if a := info.Autoencoder; a != nil {
		fmt.Fprintf(w, "image         %dx%dx%d, decoded by the autoencoder %s\n", a.ImageChannels, a.ImageSize, a.ImageSize, a.Path)
		fmt.Fprintf(w, "latent        %dx%dx%d (scaling factor %.5g, shift %g)\n", m.InChannels, m.ImageSize, m.ImageSize, a.ScalingFactor, a.ShiftFactor)
	} else {
		fmt.Fprintf(w, "image         %dx%dx%d\n", m.InChannels, m.ImageSize, m.ImageSize)
	}
	fmt.Fprintf(w, "u-net         base %d, mult %v, %d res blocks, attention at %v, %d heads, dropout %g, %d groups\n",
		m.BaseChannels, m.ChannelMult, m.NumResBlocks, m.AttentionResolutions, m.NumHeads, m.Dropout, m.NormGroups)
	if m.NumClasses > 0 {
		fmt.Fprintf(w, "classes       %d (+ null label for guidance)", m.NumClasses)
		if len(info.ClassNames) > 0 {
			fmt.Fprintf(w, ": %s", strings.Join(info.ClassNames, ", "))
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "parameters    %d (%s)\n", info.Params, humanCount(info.Params))
	fmt.Fprintf(w, "flops/image   %.3g GFLOP (one forward)\n", float64(info.FLOPsPerImage)/1e9)
	if info.Step != nil {
		fmt.Fprintf(w, "step          %d\n", *info.Step)
		fmt.Fprintf(w, "train         %s\n", info.Train)
	}
	if info.Schedule != nil {
		fmt.Fprintf(w, "schedule      %s\n", info.Schedule)
	}
	if info.Step != nil {
		fmt.Fprintf(w, "data          %s\n", info.Data)
	}
	return nil
}
