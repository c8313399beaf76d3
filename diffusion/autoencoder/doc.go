// Package autoencoder is the variational autoencoder of latent diffusion
// (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent
// Diffusion Models"), built as diffusers' AutoencoderKL with the same
// configuration fields and state_dict names, so its weights move between
// the two unchanged:
//
//	encoder: conv_in, per level layers_per_block ResnetBlock2D and (all
//	         levels but the last) a stride-2 convolution after padding the
//	         bottom and right by one; mid_block (resnet, single-head
//	         self-attention, resnet); conv_norm_out, SiLU, conv_out to
//	         2*latent_channels channels
//	quant_conv (1x1) -> mean, log-variance (clamped to [-30, 20])
//	post_quant_conv (1x1) on a latent z
//	decoder: conv_in, mid_block, per level (widest first)
//	         layers_per_block+1 ResnetBlock2D and (all levels but the last)
//	         nearest x2 upsampling and a 3x3 convolution; conv_norm_out,
//	         SiLU, conv_out
//
// Every GroupNorm has norm_num_groups groups and epsilon 1e-6. The package
// tests compare Encode and Decode with diffusers' outputs on the shipped
// reference folder (testdata/diffusers/vae).
package autoencoder
