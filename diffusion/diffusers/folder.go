package diffusers

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/diffusion/autoencoder"
	"github.com/ddpm-go/ddpm/diffusion/checkpoint"
	"github.com/ddpm-go/ddpm/diffusion/nn"
	"github.com/ddpm-go/ddpm/diffusion/sampler"
	"github.com/ddpm-go/ddpm/diffusion/unet"
	"github.com/ddpm-go/ddpm/torch"
)

// Folder is a DDPMPipeline folder loaded for sampling: its U-Net, and its
// scheduler as the project's schedule, prediction target and sampler; for
// a latent model (a folder with vae/), the AutoencoderKL that decodes its
// samples.
type Folder struct {
	UNet *unet.UNet
	// VAE, when the folder has a vae/ (as Export writes it for a latent
	// model), decodes the U-Net's samples: z decodes as
	// VAE.Decode(z/scaling_factor + shift_factor), with the factors of
	// its config. Nil for a pixel model.
	VAE       *autoencoder.Model
	vaeDir    string // where VAE was read
	Scheduler SchedulerConfig
	Schedule  diffusion.ScheduleConfig
	Target    diffusion.Target
	// Sampling is the scheduler's sampler with its settings (variance,
	// clipping, spacing); Steps is left to the sampler's default.
	Sampling sampler.Options
}

// Autoencoder describes the folder's VAE as a latent model's checkpoint
// records its autoencoder: its folder, the image and latent shapes, and the
// scaling and shift factors of its config. Nil for a pixel model.
func (f *Folder) Autoencoder() *checkpoint.Autoencoder {
	if f.VAE == nil {
		return nil
	}
	v, u := f.VAE.Config(), f.UNet.Config()
	return &checkpoint.Autoencoder{Path: f.vaeDir, ImageChannels: v.OutChannels, ImageSize: u.ImageSize * int(v.Downscale()),
		LatentChannels: v.LatentChannels, LatentSize: u.ImageSize, ScalingFactor: v.ScalingFactor, ShiftFactor: v.Shift()}
}

// Close frees the U-Net and the VAE.
func (f *Folder) Close() {
	f.UNet.Close()
	if f.VAE != nil {
		f.VAE.Close()
	}
}

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
// (model_index.json, unet/, scheduler/, and vae/ for a latent model) or
// the flat legacy layout of google/ddpm-* (config.json, weights and
// scheduler_config.json at the root), and builds its U-Net (and VAE) on
// dev. Another pipeline class, a missing file or a field the project
// cannot reproduce is an error naming it.
func Load(dir string, dev torch.Device) (*Folder, error) {
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("diffusers: %s is not a folder", dir)
	}
	var idx modelIndex
	if b, err := os.ReadFile(filepath.Join(dir, "model_index.json")); err == nil {
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
	if idx.ClassName == "DDIMPipeline" && sched.ClassName != DDIMScheduler {
		// DDIMPipeline samples with DDIMScheduler.from_config(scheduler.config),
		// whatever scheduler the folder holds.
		if sched, err = sched.As(DDIMScheduler); err != nil {
			return nil, fmt.Errorf("%w (in %s, for a DDIMPipeline)", err, sp)
		}
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
	vd := filepath.Join(dir, "vae")
	if _, err := os.Stat(filepath.Join(vd, "config.json")); err == nil {
		f.vaeDir = vd
		if f.VAE, err = LoadAutoencoder(vd, dev); err != nil {
			f.UNet.Close()
			return nil, err
		}
		u, v := f.UNet.Config(), f.VAE.Config()
		if u.InChannels != v.LatentChannels || u.OutChannels != v.LatentChannels {
			f.Close()
			return nil, fmt.Errorf("diffusers: %s: the U-Net samples %d channels, but vae/ decodes %d-channel latents", dir, u.OutChannels, v.LatentChannels)
		}
	}
	return f, nil
}

// VAE is the autoencoder of a latent model to export: the config to write
// (with the scaling and shift factors the model was trained with) and its
// weights.
type VAE struct {
	Config autoencoder.Config
	Params []nn.Param
}

// Export writes a checkpoint of this project as a DDPMPipeline folder:
// model_index.json, unet/ (config.json with every field,
// diffusion_pytorch_model.safetensors with the chosen weights, EMA by
// default) and scheduler/scheduler_config.json (a DDPMScheduler with the
// checkpoint's schedule and target, and the project's DDPM defaults:
// fixed-small variance, x0 clipped). A latent model's checkpoint needs its
// autoencoder, vae, written as vae/ (AutoencoderKL) and listed in
// model_index.json; diffusers' DDPMPipeline then samples latents, which
// vae.decode(latents / scaling_factor + shift_factor) turns into images,
// and Load here decodes them itself. vae must be nil for a pixel model.
func Export(ckpt, dir string, w checkpoint.Weights, vae *VAE) error {
	meta, err := checkpoint.ReadMeta(ckpt)
	if err != nil {
		return fmt.Errorf("diffusers: %w", err)
	}
	if meta.Model == nil {
		return fmt.Errorf("diffusers: %s records no U-Net configuration", ckpt)
	}
	switch {
	case meta.Autoencoder != nil && vae == nil:
		return fmt.Errorf("diffusers: %s is a latent model; its autoencoder (%s) must be exported with it", ckpt, meta.Autoencoder.Path)
	case meta.Autoencoder == nil && vae != nil:
		return fmt.Errorf("diffusers: %s is a pixel model; it has no autoencoder to export", ckpt)
	case vae != nil && (vae.Config.LatentChannels != meta.Model.InChannels || vae.Config.LatentChannels != meta.Model.OutChannels):
		return fmt.Errorf("diffusers: the autoencoder makes %d-channel latents, but the U-Net of %s takes %d channels",
			vae.Config.LatentChannels, ckpt, meta.Model.InChannels)
	}
	sc, err := SchedulerConfigFor(meta.Schedule, meta.Target, sampler.Options{Sampler: sampler.DDPM, Clip: sampler.ClipStatic})
	if err != nil {
		return err
	}
	if meta.Autoencoder != nil {
		// Latents are not bounded to [-1, 1]: clipping x0 would distort
		// them (the project's latent runs sample without clipping too).
		sc.ClipSample = false
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
	index := map[string]any{
		"_class_name": "DDPMPipeline", "_diffusers_version": Version,
		"unet": []string{"diffusers", "UNet2DModel"}, "scheduler": []string{"diffusers", "DDPMScheduler"},
	}
	if vae != nil {
		if err := WriteAutoencoder(filepath.Join(dir, "vae"), vae.Config, vae.Params); err != nil {
			return err
		}
		index["vae"] = []string{"diffusers", AutoencoderClass}
	}
	return WriteJSON(filepath.Join(dir, "model_index.json"), index)
}
