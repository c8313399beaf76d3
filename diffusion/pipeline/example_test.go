package pipeline_test

import (
	"context"
	"fmt"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/diffusion/pipeline"
	"github.com/ddpm-go/ddpm/diffusion/unet"
	"github.com/ddpm-go/ddpm/torch"
)

// A pipeline over a model in memory (Load builds one from a checkpoint);
// zero options sample unconditionally with the default sampler.
func ExampleNew() {
	cfg, _ := unet.Preset("tiny")
	model, err := unet.New(cfg, torch.CPU, torch.Float32, nil)
	if err != nil {
		panic(err)
	}
	defer model.Close()
	sched, _ := diffusion.NewSchedule(diffusion.ScheduleConfig{T: 100})
	p, err := pipeline.New(model, sched, pipeline.Info{Channels: 1, Size: 16}, pipeline.Options{})
	if err != nil {
		panic(err)
	}
	imgs, err := p.Generate(context.Background(), 3, pipeline.GenerateOptions{Seed: 7})
	if err != nil {
		panic(err)
	}
	fmt.Println(imgs.N, imgs.C, imgs.H, imgs.W, len(imgs.Pixels), imgs.Image(0).Bounds().Size())
	// Output: 3 1 16 16 768 (16,16)
}
