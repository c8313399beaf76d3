package main

import (
	"fmt"
	"os"

	"github.com/ddpm-go/ddpm/diffusion/checkpoint"
	"github.com/ddpm-go/ddpm/diffusion/diffusers"
	"github.com/urfave/cli/v2"
)

var exportCommand = &cli.Command{
	Name:  "export",
	Usage: "write a trained model as a diffusers folder (DDPMPipeline: UNet2DModel and DDPMScheduler)",
	Description: "Writes model_index.json, unet/config.json (every field), unet/diffusion_pytorch_model.safetensors\n" +
		"(EMA weights by default) and scheduler/scheduler_config.json; diffusers' DDPMPipeline.from_pretrained\n" +
		"reads the folder, and so does ddpm sample --model.",
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
	if err := diffusers.Export(path, out, w); err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "ddpm: wrote %s (diffusers DDPMPipeline from %s, %s weights)\n", out, path, w)
	return nil
}
