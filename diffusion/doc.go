// Package diffusion implements denoising diffusion probabilistic models (Ho et al. 2020) and their samplers on top of package torch.
package diffusion
