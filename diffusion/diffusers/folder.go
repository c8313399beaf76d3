package diffusers

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/diffusion/checkpoint"
	"github.com/ddpm-go/ddpm/diffusion/sampler"
	"github.com/ddpm-go/ddpm/diffusion/unet"
	"github.com/ddpm-go/ddpm/torch"
)

// Folder is a DDPMPipeline folder loaded for sampling: its U-Net, and its
// scheduler as the project's schedule, prediction target and sampler.
type Folder struct {
	UNet      *unet.UNet
	Scheduler SchedulerConfig
	Schedule  diffusion.ScheduleConfig
	Target    diffusion.Target
	// Sampling is the scheduler's sampler with its settings (variance,
	// clipping, spacing); Steps is left to the sampler's default.
	Sampling sampler.Options
}

// Close frees the U-Net.
func (f *Folder) Close() { f.UNet.Close() }

// modelIndex is model_index.json (the parts read here).
type modelIndex struct {
	ClassName string    `json:"_class_name"`
	UNet      [2]string `json:"unet"`
	Scheduler [2]string `json:"scheduler"`
}

// schedulerFile finds the scheduler config of either layout.
func schedulerFile(dir string) (string, error) {
	for _, p := range []string{filepath.Join(dir, "scheduler", "scheduler_config.json"), filepath.Join(dir, "scheduler_config.json")} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("diffusers: %s has no scheduler/scheduler_config.json or scheduler_config.json", dir)
}

// Load reads a diffusers DDPMPipeline folder, in the multi-folder layout
// (model_index.json, unet/, scheduler/) or the flat legacy layout of
// google/ddpm-* (config.json, weights and scheduler_config.json at the
// root), and builds its U-Net on dev. Another pipeline class, a missing
// file or a field the project cannot reproduce is an error naming it.
func Load(dir string, dev torch.Device) (*Folder, error) {
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("diffusers: %s is not a folder", dir)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "model_index.json")); err == nil {
		var idx modelIndex
		if err := json.Unmarshal(b, &idx); err != nil {
			return nil, fmt.Errorf("diffusers: %s: %w", filepath.Join(dir, "model_index.json"), err)
		}
		if idx.ClassName != "DDPMPipeline" && idx.ClassName != "DDIMPipeline" {
			return nil, fmt.Errorf("diffusers: %s holds a %s; only DDPMPipeline and DDIMPipeline folders (a UNet2DModel and a scheduler) are read", dir, idx.ClassName)
		}
	}
	sp, err := schedulerFile(dir)
	if err != nil {
		return nil, err
	}
	sched, err := ReadSchedulerConfig(sp)
	if err != nil {
		return nil, err
	}
	f := &Folder{Scheduler: sched}
	wrap := func(err error) error { return fmt.Errorf("%w (in %s)", err, sp) }
	sc, err := sched.Schedule()
	if err != nil {
		return nil, wrap(err)
	}
	full, err := diffusion.NewSchedule(sc)
	if err != nil {
		return nil, wrap(err)
	}
	f.Schedule = full.Config() // defaults filled in

	if f.Target, err = sched.Target(); err != nil {
		return nil, wrap(err)
	}
	if f.Sampling, err = sched.SamplerOptions(); err != nil {
		return nil, wrap(err)
	}
	if f.UNet, err = LoadUNet(dir, dev); err != nil {
		return nil, err
	}
	return f, nil
}

// Export writes a checkpoint of this project as a DDPMPipeline folder:
// model_index.json, unet/ (config.json with every field,
// diffusion_pytorch_model.safetensors with the chosen weights, EMA by
// default) and scheduler/scheduler_config.json (a DDPMScheduler with the
// checkpoint's schedule and target, and the project's DDPM defaults:
// fixed-small variance, x0 clipped).
func Export(ckpt, dir string, w checkpoint.Weights) error {
	meta, err := checkpoint.ReadMeta(ckpt)
	if err != nil {
		return fmt.Errorf("diffusers: %w", err)
	}
	if meta.Model == nil {
		return fmt.Errorf("diffusers: %s records no U-Net configuration", ckpt)
	}
	sc, err := SchedulerConfigFor(meta.Schedule, meta.Target, sampler.Options{Sampler: sampler.DDPM, Clip: sampler.ClipStatic})
	if err != nil {
		return err
	}
	if _, err := UNetConfigFor(*meta.Model); err != nil {
		return err
	}
	u, err := unet.New(*meta.Model, torch.CPU, torch.Float32, nil)
	if err != nil {
		return fmt.Errorf("diffusers: %w", err)
	}
	defer u.Close()
	if err := checkpoint.LoadWeights(ckpt, w, u.Params()); err != nil {
		return fmt.Errorf("diffusers: %w", err)
	}
	if err := WriteUNet(filepath.Join(dir, "unet"), u.Config(), u.Params()); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(dir, "scheduler"), 0o755); err != nil {
		return fmt.Errorf("diffusers: %w", err)
	}
	if err := WriteSchedulerConfig(filepath.Join(dir, "scheduler", "scheduler_config.json"), sc); err != nil {
		return err
	}
	return WriteJSON(filepath.Join(dir, "model_index.json"), map[string]any{
		"_class_name": "DDPMPipeline", "_diffusers_version": Version,
		"unet": []string{"diffusers", "UNet2DModel"}, "scheduler": []string{"diffusers", "DDPMScheduler"},
	})
}
