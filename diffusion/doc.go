// Package diffusion holds what training and sampling share for denoising
// diffusion probabilistic models (Ho et al. 2020): the noise Schedule,
// computed once in float64 and named after the paper (betas, alphas,
// alphas_cumprod, the posterior coefficients, SNR; Coefficients gives every
// quantity of one timestep), the timestep spacings samplers use, the
// prediction Targets (epsilon, x0, v) with QSample, Gather and
// SplitPrediction, the Precision a model runs in, and the Model interface
// that samplers and trainers take as an argument and never own.
//
// The rest of the library builds on it, each concept in its own package:
// sampler (DDPM, DDIM, DPM-Solver++, guidance), train (the Trainer),
// optim (AdamW, EMA), checkpoint (the file format), unet and nn (the
// network), pipeline (model to images). Errors of this package start with
// "diffusion: "; names parse the enum way (ParseScheduleKind, ParseSpacing,
// ParseTarget, ParsePrecision: case, spaces and '_' versus '-' do not
// matter). A Schedule is immutable and safe for concurrent use.
package diffusion
