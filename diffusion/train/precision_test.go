package train_test

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/diffusion/data"
	"github.com/ddpm-go/ddpm/diffusion/optim"
	"github.com/ddpm-go/ddpm/diffusion/train"
	"github.com/ddpm-go/ddpm/diffusion/unet"
	"github.com/ddpm-go/ddpm/torch"
)

// stripes yields batches of random stripe patterns, the same for the same
// step, so two runs see the same data.
type stripes struct {
	n, size, next int
	nan           bool // poison the first pixel
}

func (s *stripes) Next(context.Context) (data.Batch, error) {
	rng := rand.New(rand.NewPCG(7, uint64(s.next)))
	s.next++
	img := make([]float32, s.n*s.size*s.size)
	for i := range s.n {
		fx, fy, ph := 1+rng.IntN(4), 1+rng.IntN(4), rng.Float64()*math.Pi
		for y := range s.size {
			for x := range s.size {
				img[(i*s.size+y)*s.size+x] = float32(math.Sin(float64(fx*x)*0.4+ph) * math.Cos(float64(fy*y)*0.4))
			}
		}
	}
	if s.nan {
		img[0] = float32(math.NaN())
	}
	return data.Batch{Images: img, N: s.n}, nil
}

func (s *stripes) Skip(n int) { s.next += n }

// trainTiny trains a fresh tiny U-Net (same initial weights every call) for
// steps steps in precision p and returns every step's loss.
func trainTiny(t *testing.T, p diffusion.Precision, steps int64, src train.BatchSource) ([]float64, error) {
	t.Helper()
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
	tr, err := train.New(model, sched, train.Config{Steps: steps, BatchSize: 8, Seed: 1, LogEvery: 1, Precision: p,
		Optimizer: optim.AdamWConfig{LR: 2e-3, WarmupSteps: 5}}, torch.CPU, []int64{1, int64(cfg.ImageSize), int64(cfg.ImageSize)})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	var losses []float64
	tr.OnLog = func(m train.Metrics) { losses = append(losses, m.Loss) }
	err = tr.Run(context.Background(), src)
	for _, p := range model.Params() {
		if p.T.DType() != torch.Float32 {
			t.Errorf("%s became %s", p.Name, p.T.DType())
		}
	}
	for _, p := range tr.EMA().Params() {
		if p.T.DType() != torch.Float32 {
			t.Errorf("EMA %s is %s", p.Name, p.T.DType())
		}
	}
	return losses, err
}

// A bf16 run of the tiny U-Net tracks the float32 run step by step: both
// draw the same timesteps, noise and data, so only the arithmetic differs.
// Measured over 30 steps: the mean loss of each block of 10 steps differs
// by at most ~2% between the two; the bound is 10%, and both must fall.
func TestBF16TracksFloat32Loss(t *testing.T) {
	if !torch.CPUHasBF16() {
		t.Skip("this CPU has no bfloat16 instructions")
	}
	const steps, block = 30, 10
	ref, err := trainTiny(t, diffusion.Float32, steps, &stripes{n: 8, size: 16})
	if err != nil {
		t.Fatal(err)
	}
	got, err := trainTiny(t, diffusion.BF16, steps, &stripes{n: 8, size: 16})
	if err != nil {
		t.Fatal(err)
	}
	var worst float64
	var means [2][]float64
	for b := 0; b < steps; b += block {
		var r, g float64
		for i := b; i < b+block; i++ {
			r += ref[i] / block
			g += got[i] / block
		}
		means[0], means[1] = append(means[0], r), append(means[1], g)
		worst = max(worst, math.Abs(g-r)/r)
	}
	t.Logf("mean loss per %d steps: float32 %.4f, bf16 %.4f; worst relative difference %.4f", block, means[0], means[1], worst)
	if !(worst < 0.1) {
		t.Errorf("bf16 loss strays from float32's by %.3f (bound 0.1)", worst)
	}
	last := len(means[0]) - 1
	if !(means[0][last] < means[0][0]) || !(means[1][last] < means[1][0]) {
		t.Errorf("the loss did not fall: float32 %v, bf16 %v", means[0], means[1])
	}
}

// A NaN in a bf16 run stops it with one line that names the precision.
func TestBF16NaNIsOneLine(t *testing.T) {
	if !torch.CPUHasBF16() {
		t.Skip("this CPU has no bfloat16 instructions")
	}
	_, err := trainTiny(t, diffusion.BF16, 3, &stripes{n: 8, size: 16, nan: true})
	var nf *train.NonFiniteLossError
	if !errors.As(err, &nf) || !strings.Contains(err.Error(), "in bf16") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("error %v, want one line naming bf16", err)
	}
}
