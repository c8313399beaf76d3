package train_test

import (
	"context"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/diffusion/data"
	"github.com/ddpm-go/ddpm/diffusion/optim"
	"github.com/ddpm-go/ddpm/diffusion/train"
	"github.com/ddpm-go/ddpm/diffusion/unet"
	"github.com/ddpm-go/ddpm/torch"
)

// eightImages repeats the same 8 images in every batch.
type eightImages struct{ imgs []float32 }

func (e eightImages) Next(context.Context) (data.Batch, error) {
	return data.Batch{Images: e.imgs, N: 8}, nil
}
func (eightImages) Skip(int) {}

// The tiny U-Net memorises 8 images: its loss falls at least 10x, the
// sanity check that model, targets, optimizer and trainer fit together.
func TestTinyUNetOverfitsEightImages(t *testing.T) {
	if testing.Short() {
		t.Skip("trains for a few hundred steps")
	}
	cfg, err := unet.Preset("tiny")
	if err != nil {
		t.Fatal(err)
	}
	gen, _ := torch.NewGenerator(3, torch.CPU)
	defer gen.Close()
	model, err := unet.NewForTraining(cfg, torch.CPU, torch.Float32, gen)
	if err != nil {
		t.Fatal(err)
	}
	defer model.Close()
	sched, err := diffusion.NewSchedule(diffusion.DefaultScheduleConfig())
	if err != nil {
		t.Fatal(err)
	}
	size := cfg.ImageSize
	imgs := make([]float32, 8*size*size)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 8 { // stripes and blocks, one pattern per image
		fx, fy := 1+rng.IntN(3), 1+rng.IntN(3)
		for y := range size {
			for x := range size {
				imgs[i*size*size+y*size+x] = float32(math.Copysign(1, math.Sin(float64(fx*x)*0.5)*math.Cos(float64(fy*y)*0.5)))
			}
		}
	}
	tr, err := train.New(model, sched, train.Config{Steps: 300, BatchSize: 8, Seed: 1, LogEvery: 1,
		EMADecay: 0.99, Optimizer: optim.AdamWConfig{LR: 2e-3, WarmupSteps: 20}}, torch.CPU,
		[]int64{1, int64(size), int64(size)})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	var losses []float64
	tr.OnLog = func(m train.Metrics) { losses = append(losses, m.Loss) }
	if err := tr.Run(context.Background(), eightImages{imgs}); err != nil {
		t.Fatal(err)
	}
	// The first step's loss against the mean of the last 50 (single steps
	// are noisy: each draws its own timesteps).
	first, last := losses[0], 0.0
	for _, l := range losses[len(losses)-50:] {
		last += l / 50
	}
	t.Logf("loss: first step %.4f, mean of the last 50 steps %.4f", first, last)
	if last > first/10 {
		t.Errorf("loss fell from %.4f to %.4f, less than 10x", first, last)
	}
}
