// Package servetest makes the small model that the serving tests (package
// serve's, its client's) sample.
package servetest

import (
	"testing"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/diffusion/pipeline"
	"github.com/ddpm-go/ddpm/diffusion/unet"
	"github.com/ddpm-go/ddpm/torch"
)

// TinyUNet is the tiny preset U-Net for 1×16×16 images with classes labels
// (0: unconditional), its weights random (seed 3) and its zero-initialised
// output layer perturbed, so that every output depends on the input, the
// timestep and the label.
func TinyUNet(t testing.TB, classes int) *unet.UNet {
	t.Helper()
	cfg, err := unet.Preset("tiny")
	if err != nil {
		t.Fatal(err)
	}
	cfg.NumClasses = classes
	gen, err := torch.NewGenerator(3, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer gen.Close()
	u, err := unet.New(cfg, torch.CPU, torch.Float32, gen)
	if err != nil {
		t.Fatal(err)
	}
	s := torch.NewScope(torch.NoGrad)
	for _, p := range u.Params() {
		s.AddInPlace(p.T, s.MulScalar(s.Randn(p.T.Shape(), torch.Float32, torch.CPU, gen), 0.05))
	}
	err = s.Err()
	s.Close()
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// Pipeline samples m, a model of TinyUNet's shape with classes labels, on a
// linear schedule of T = 50 steps.
func Pipeline(t testing.TB, m diffusion.Model, classes int) *pipeline.Pipeline {
	t.Helper()
	sched, err := diffusion.NewSchedule(diffusion.ScheduleConfig{T: 50})
	if err != nil {
		t.Fatal(err)
	}
	p, err := pipeline.New(m, sched, pipeline.Info{Channels: 1, Size: 16, NumClasses: classes}, pipeline.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}
