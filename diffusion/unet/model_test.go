package unet_test

import (
	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/diffusion/nn"
	"github.com/ddpm-go/ddpm/diffusion/unet"
)

var (
	_ diffusion.Model = (*unet.UNet)(nil)
	_ nn.Module       = (*unet.UNet)(nil)
)
