package main

import (
	"fmt"
	"os"

	"github.com/ddpm-go/ddpm/diffusion/autoencoder"
	"github.com/ddpm-go/ddpm/diffusion/checkpoint"
	"github.com/ddpm-go/ddpm/diffusion/diffusers"
	"github.com/ddpm-go/ddpm/diffusion/pipeline"
	"github.com/ddpm-go/ddpm/torch"
	"github.com/urfave/cli/v2"
)

var exportCommand = &cli.Command{
	Name:  "export",
	Usage: "write a trained model as a diffusers folder (DDPMPipeline: UNet2DModel and DDPMScheduler; AutoencoderKL)",
	Description: "Writes model_index.json, unet/config.json (every field), unet/diffusion_pytorch_model.safetensors\n" +
		"(EMA weights by default) and scheduler/scheduler_config.json; diffusers' DDPMPipeline.from_pretrained\n" +
		"reads the folder, and so does ddpm sample --model. A latent model's folder also holds its autoencoder\n" +
		"as vae/ (AutoencoderKL, with the run's scaling_factor and shift_factor). A run or checkpoint of\n" +
		"ddpm train-autoencoder is written as an AutoencoderKL folder (config.json and\n" +
		"diffusion_pytorch_model.safetensors): AutoencoderKL.from_pretrained reads it, and so does\n" +
		"ddpm train --autoencoder.",
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "run", Usage: "run directory (its newest checkpoint)", EnvVars: []string{"DDPM_RUN"}},
		&cli.StringFlag{Name: "checkpoint", Usage: "checkpoint file (.safetensors)", EnvVars: []string{"DDPM_CHECKPOINT"}},
		&cli.StringFlag{Name: "weights", Value: "ema", Usage: "ema or model", EnvVars: []string{"DDPM_WEIGHTS"}},
		&cli.StringFlag{Name: "format", Value: "diffusers", Usage: "output format (diffusers)"},
		&cli.StringFlag{Name: "out", Usage: "folder to write (must not exist or be empty)", Required: true},
	},
	Action: runExport,
}

func runExport(c *cli.Context) error {
	if f := c.String("format"); f != "diffusers" {
		return fmt.Errorf("--format %q: the only export format is diffusers", f)
	}
	path, err := checkpointPath(c)
	if err != nil {
		return err
	}
	w, err := checkpoint.ParseWeights(c.String("weights"))
	if err != nil {
		return fmt.Errorf("--weights: %w", err)
	}
	out := c.String("out")
	if entries, err := os.ReadDir(out); err == nil && len(entries) > 0 {
		return fmt.Errorf("--out %s is not empty; nothing was written", out)
	}
	if format, err := checkpoint.FormatOf(path); err != nil {
		return err
	} else if format == autoencoder.CheckpointFormat {
		return exportAutoencoder(c, path, w, out)
	}
	meta, err := checkpoint.ReadMeta(path)
	if err != nil {
		return err
	}
	var vae *diffusers.VAE
	what := "DDPMPipeline"
	if ref := meta.Autoencoder; ref != nil {
		l, err := pipeline.LoadLatent(path, *ref, torch.CPU)
		if err != nil {
			return err
		}
		defer l.Model.Close()
		cfg := l.Model.Config()
		shift := l.ShiftFactor
		cfg.ScalingFactor, cfg.ShiftFactor = l.ScalingFactor, &shift
		vae = &diffusers.VAE{Config: cfg, Params: l.Model.Params()}
		what = "DDPMPipeline of latents with its AutoencoderKL as vae/"
	}
	if err := diffusers.Export(path, out, w, vae); err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "ddpm: wrote %s (diffusers %s from %s, %s weights)\n", out, what, path, w)
	return nil
}

// exportAutoencoder writes an autoencoder checkpoint of train-autoencoder
// as an AutoencoderKL folder.
func exportAutoencoder(c *cli.Context, path string, w checkpoint.Weights, out string) error {
	m, _, err := autoencoder.LoadCheckpoint(path, w, torch.CPU)
	if err != nil {
		return err
	}
	defer m.Close()
	if err := diffusers.WriteAutoencoder(out, m.Config(), m.Params()); err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "ddpm: wrote %s (diffusers AutoencoderKL from %s, %s weights)\n", out, path, w)
	return nil
}
