package unet_test

// The training step against PyTorch lives in the external test package:
// it drives package train, which imports unet.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/diffusion/data"
	"github.com/ddpm-go/ddpm/diffusion/nn"
	"github.com/ddpm-go/ddpm/diffusion/train"
	"github.com/ddpm-go/ddpm/diffusion/unet"
	"github.com/ddpm-go/ddpm/internal/benchcmp"
	"github.com/ddpm-go/ddpm/internal/pyref"
	"github.com/ddpm-go/ddpm/torch"
)

func BenchmarkTrainStepVsPyTorch(b *testing.B) {
	for _, c := range []struct {
		preset                       string
		batch, stepsPerRound, rounds int
	}{
		{"small", 64, 3, 5},
		{"cifar10", 8, 1, 7},
	} {
		for _, p := range []diffusion.Precision{diffusion.Float32, diffusion.BF16} {
			b.Run(fmt.Sprintf("%s-batch%d-%s", c.preset, c.batch, p), func(b *testing.B) {
				trainStepVsPyTorch(b, c.preset, c.batch, c.stepsPerRound, c.rounds, p)
			})
		}
	}
}

// trainStepVsPyTorch times the Go trainer in precision against PyTorch
// eager float32 (the baseline a user runs today).
func trainStepVsPyTorch(b *testing.B, presetName string, batch, stepsPerRound, rounds int, precision diffusion.Precision) {
	if err := precision.Check(torch.CPU); err != nil {
		b.Skip(err)
	}
	py := pyref.Python(b)
	u, _ := unet.BenchModel(b, presetName, nn.Training)
	cfg := u.Config()
	imageShape := []int64{int64(cfg.InChannels), int64(cfg.ImageSize), int64(cfg.ImageSize)}
	// The thread count a user gets (every CPU), on both sides, before the
	// first case's trainer or sampler would set it half-way.
	if err := torch.UseDefaultThreads(); err != nil {
		b.Fatal(err)
	}
	threads := torch.NumThreads()

	rng := rand.New(rand.NewPCG(5, 6))
	images := make([]float32, batch*int(imageShape[0]*imageShape[1]*imageShape[2]))
	for i := range images {
		images[i] = 2*rng.Float32() - 1
	}
	s := torch.NewScope(torch.NoGrad)
	defer s.Close()
	x0 := s.FromFloat32s(images, append([]int64{int64(batch)}, imageShape...)...)
	if err := s.Err(); err != nil {
		b.Fatal(err)
	}
	// Start PyTorch before training moves the weights.
	ref := unet.StartCompareReference(b, py, b.TempDir(), u, map[string]*torch.Tensor{"x0": x0}, "train", threads)

	tr, err := train.New(u, unet.LinearSchedule(b), train.Config{Steps: math.MaxInt64, BatchSize: batch, Seed: 7, Precision: precision}, torch.CPU, imageShape)
	if err != nil {
		b.Fatal(err)
	}
	defer tr.Close()
	src := &gatedSource{batch: data.Batch{Images: images, N: batch}, asked: make(chan struct{}), release: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	var runErr error
	done := make(chan struct{})
	go func() {
		runErr = tr.Run(ctx, src)
		close(done)
	}()
	defer func() {
		cancel()
		<-done
		if !errors.Is(runErr, context.Canceled) {
			b.Errorf("trainer: %v", runErr)
		}
	}()
	// waitAsked returns when the trainer asks for its next batch, that is
	// when it has finished the step before.
	waitAsked := func() {
		select {
		case <-src.asked:
		case <-done:
			b.Fatalf("trainer stopped: %v", runErr)
		}
	}
	step := func() {
		src.release <- struct{}{}
		waitAsked()
	}
	waitAsked()
	step() // warm-up

	var goTimes, torchTimes []benchcmp.Cost
	for range max(b.N, rounds) {
		goTimes = append(goTimes, benchcmp.Measure(b, stepsPerRound, func() {
			for range stepsPerRound {
				step()
			}
		}))
		torchTimes = append(torchTimes, ref.Run(b, fmt.Sprintf("train %d", stepsPerRound)))
	}
	benchcmp.Report(b, batch, "images", goTimes, torchTimes)
}

// gatedSource hands the trainer the same batch at every step, one step at a
// time: Next says that the trainer is waiting, then blocks until the
// benchmark releases the step, so the trainer idles while PyTorch runs.
type gatedSource struct {
	batch   data.Batch
	asked   chan struct{}
	release chan struct{}
}

func (g *gatedSource) Next(ctx context.Context) (data.Batch, error) {
	select {
	case g.asked <- struct{}{}:
	case <-ctx.Done():
		return data.Batch{}, ctx.Err()
	}
	select {
	case <-g.release:
		return g.batch, nil
	case <-ctx.Done():
		return data.Batch{}, ctx.Err()
	}
}

func (g *gatedSource) Skip(int) {}
