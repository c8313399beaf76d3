// Package diffusers reads and writes the folders of Hugging Face diffusers:
// a UNet2DModel's config.json and weights, and a scheduler's
// scheduler_config.json (DDPMScheduler, DDIMScheduler,
// DPMSolverMultistepScheduler) mapped onto the project's schedule, target
// and sampler options.
//
// The mapping is exact or it fails: a config field whose value the
// project's code would not reproduce step for step (trained betas, a
// learned variance, a clipping range other than 1, a timestep offset, ...)
// is an error naming the field and the value, never a silent difference.
// The package's tests compare the project's schedule and sampler steps with
// outputs of diffusers' own classes (shared/fixtures/diffusers).
package diffusers
