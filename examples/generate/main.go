// Command generate shows the packages used from Go: it loads a checkpoint
// written by `ddpm train` and saves a grid of DDIM samples.
//
//	go run ./examples/generate -checkpoint runs/X/ckpt-00002000.safetensors -out grid.png
package main

import (
	"context"
	"flag"
	"fmt"
	"log"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/diffusion/images"
	"github.com/ddpm-go/ddpm/diffusion/pipeline"
	"github.com/ddpm-go/ddpm/torch"
)

func main() {
	ckpt := flag.String("checkpoint", "", "checkpoint file written by ddpm train")
	out := flag.String("out", "grid.png", "PNG grid to write")
	n := flag.Int("n", 16, "images")
	flag.Parse()
	if *ckpt == "" {
		log.Fatal("give -checkpoint")
	}
	p, err := pipeline.Load(*ckpt, torch.BestDevice(), pipeline.EMAWeights)
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()
	pix, err := p.Generate(context.Background(), *n, pipeline.GenerateOptions{
		Seed:  1,
		Class: -1,
		Sample: diffusion.SampleOptions{
			Sampler: diffusion.SamplerDDIM,
			Steps:   50,
			Clip:    diffusion.ClipStatic,
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	cfg := p.Model.Config()
	grid, err := images.Grid(pix, *n, cfg.OutChannels, cfg.ImageSize, cfg.ImageSize, 4, 2)
	if err != nil {
		log.Fatal(err)
	}
	if err := images.SavePNG(*out, grid); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("wrote %s: %d samples from step %d\n", *out, *n, p.Step)
}
