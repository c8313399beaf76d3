package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/ddpm-go/ddpm/diffusion/autoencoder"
	"github.com/ddpm-go/ddpm/diffusion/checkpoint"
	"github.com/ddpm-go/ddpm/diffusion/diffusers"
	"github.com/ddpm-go/ddpm/diffusion/nn"
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
		"ddpm train --autoencoder.\n" +
		"--format checkpoint writes one .safetensors file instead: the chosen weights (in --dtype) and the\n" +
		"checkpoint's metadata, without what resuming needs; ddpm sample, eval and info take it as\n" +
		"--checkpoint, ddpm serve as --model NAME=FILE (how the model under models/ is made).",
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "run", Usage: "run directory (its newest checkpoint)", EnvVars: []string{"DDPM_RUN"}},
		&cli.StringFlag{Name: "checkpoint", Usage: "checkpoint file (.safetensors)", EnvVars: []string{"DDPM_CHECKPOINT"}},
		&cli.StringFlag{Name: "weights", Value: "ema", Usage: "ema or model", EnvVars: []string{"DDPM_WEIGHTS"}},
		&cli.StringFlag{Name: "format", Value: "diffusers", Usage: "output format: diffusers (a folder) or checkpoint (one file to sample from)"},
		&cli.StringFlag{Name: "dtype", Value: "float32", Usage: "--format checkpoint: how the weights are stored: float32, bf16 or fp16"},
		// Checked by runExport rather than Required: urfave prints the whole
		// help before its one line.
		&cli.StringFlag{Name: "out", Usage: "folder to write (must not exist or be empty), or with --format checkpoint the .safetensors file (must not exist); required"},
	},
	Action: runExport,
}

func runExport(c *cli.Context) error {
	format := c.String("format")
	if format != "diffusers" && format != "checkpoint" {
		return fmt.Errorf("--format %q: export writes diffusers or checkpoint", format)
	}
	if c.IsSet("dtype") && format != "checkpoint" {
		return fmt.Errorf("--dtype is for --format checkpoint (a diffusers folder stores the weights as float32)")
	}
	// An empty --out would be the current directory (for a folder: a
	// diffusers export there would be overwritten).
	out := c.String("out")
	switch {
	case out == "" && format == "checkpoint":
		return errors.New("--out is required: the .safetensors file to write")
	case out == "":
		return errors.New("--out is required: the folder to write")
	case format == "checkpoint" && !strings.EqualFold(filepath.Ext(out), ".safetensors"):
		return fmt.Errorf("--out %s: --format checkpoint writes a .safetensors file; give that file name", out)
	}
	path, err := checkpointPath(c)
	if err != nil {
		return err
	}
	w, err := checkpoint.ParseWeights(c.String("weights"))
	if err != nil {
		return fmt.Errorf("--weights: %w", err)
	}
	if format == "checkpoint" {
		return exportWeights(c, path, w, out)
	}
	if entries, err := os.ReadDir(out); err == nil && len(entries) > 0 {
		return fmt.Errorf("--out %s is not empty; nothing was written", out)
	}
	if format, err := checkpoint.FormatOf(path); err != nil {
		return err
	} else if format == autoencoder.CheckpointFormat {
		return exportAutoencoder(c, path, w, out)
	}
	if err := checkWeightsFinite(path, w); err != nil {
		return err
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
	// Loaded as sampling loads an autoencoder, which refuses weights that
	// are not finite.
	m, _, _, err := pipeline.LoadAutoencoder(path, w, torch.CPU)
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

// exportWeights writes the weights file of --format checkpoint.
func exportWeights(c *cli.Context, path string, w checkpoint.Weights, out string) error {
	dt, err := torch.ParseDType(c.String("dtype"))
	if err != nil || !(dt == torch.Float32 || dt == torch.BFloat16 || dt == torch.Float16) {
		return fmt.Errorf("--dtype %q: want float32, bf16 or fp16", c.String("dtype"))
	}
	if _, err := os.Stat(out); err == nil {
		return fmt.Errorf("--out %s exists; nothing was written", out)
	}
	if format, err := checkpoint.FormatOf(path); err != nil {
		return err
	} else if format != checkpoint.Format {
		return fmt.Errorf("%s is not a U-Net checkpoint of ddpm train; --format checkpoint writes those", path)
	}
	if err := checkWeightsFinite(path, w); err != nil {
		return err
	}
	if err := checkpoint.WriteWeights(path, out, w, dt); err != nil {
		return err
	}
	st, err := os.Stat(out)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "ddpm: wrote %s (%s weights of %s as %s, %.1f MB)\n", out, w, path, dt, float64(st.Size())/1e6)
	return nil
}

// checkWeightsFinite refuses to export weights that sample, eval and serve
// would refuse, from the checkpoint file alone (a latent model's
// autoencoder need not be at hand to copy the model).
func checkWeightsFinite(path string, w checkpoint.Weights) error {
	s := torch.NewScope(torch.NoGrad)
	defer s.Close()
	all, _, err := s.LoadSafetensors(path, torch.CPU)
	if err != nil {
		return err
	}
	part := checkpoint.Part(all, w.Prefix(), false)
	params := make([]nn.Param, 0, len(part))
	for name, t := range part {
		params = append(params, nn.Param{Name: name, T: t})
	}
	slices.SortFunc(params, func(a, b nn.Param) int { return strings.Compare(a.Name, b.Name) })
	if err := pipeline.CheckFinite(params); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
