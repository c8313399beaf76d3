// Command generate shows the packages used from Go: it loads a checkpoint
// written by `ddpm train` (or by package train) and saves a grid of samples
// made with the pipeline's default sampler (DPM-Solver++(2M), 20 steps, x0
// clipped).
//
//	go run ./examples/generate -checkpoint runs/X/ckpt-00002000.safetensors -out grid.png
package main

import (
	"context"
	"flag"
	"fmt"
	"log"

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
	p, err := pipeline.Load(*ckpt, pipeline.Options{Device: torch.BestDevice()})
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()
	imgs, err := p.Generate(context.Background(), *n, pipeline.GenerateOptions{Seed: 1})
	if err != nil {
		log.Fatal(err)
	}
	grid, err := imgs.Grid(4, 2)
	if err != nil {
		log.Fatal(err)
	}
	if err := images.SavePNG(*out, grid); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("wrote %s: %d samples from step %d\n", *out, *n, p.Info().Step)
}
