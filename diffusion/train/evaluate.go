package train

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/diffusion/data"
	"github.com/ddpm-go/ddpm/torch"
)

// Evaluate measures the model on up to n held-out images with fixed
// timesteps and noise (the same every call, so values are comparable across
// a run): the ε-prediction MSE and the PSNR (dB, data range 2) of the x0 it
// implies. Dropout is off during evaluation.
func (tr *Trainer) Evaluate(held *data.Dataset, n int) (mse, psnr float64, err error) {
	n = min(n, held.N)
	if n == 0 {
		return 0, 0, fmt.Errorf("train: evaluate: the held-out set is empty")
	}
	tr.model.SetTraining(false, nil)
	defer tr.model.SetTraining(true, tr.gen)
	gen, err := torch.NewGenerator(tr.cfg.Seed+1, tr.dev)
	if err != nil {
		return 0, 0, err
	}
	defer gen.Close()
	rng := rand.New(rand.NewPCG(tr.cfg.Seed, math.MaxUint64))
	per := held.C * held.H * held.W
	var epsErr, x0Err float64
	const batch = 64
	for lo := 0; lo < n; lo += batch {
		hi := min(lo+batch, n)
		e, x, err := tr.evalBatch(held.Images[lo*per:hi*per], hi-lo, rng, gen)
		if err != nil {
			return 0, 0, err
		}
		epsErr += e
		x0Err += x
	}
	mse = epsErr / float64(n)
	psnr = 10 * math.Log10(4/(x0Err/float64(n)))
	return mse, psnr, nil
}

// evalBatch returns the summed per-image ε and x0 mean squared errors.
func (tr *Trainer) evalBatch(images []float32, n int, rng *rand.Rand, gen *torch.Generator) (float64, float64, error) {
	s := torch.NewScope(torch.Inference)
	defer s.Close()
	shape := append([]int64{int64(n)}, tr.shape...)
	x0 := tr.toDevice(s, s.FromFloat32s(images, shape...))
	ts := make([]int64, n)
	for i := range ts {
		ts[i] = rng.Int64N(int64(tr.sched.T()))
	}
	t := tr.toDevice(s, s.FromInt64s(ts, int64(n)))
	eps := s.Randn(shape, torch.Float32, tr.dev, gen)
	xt := tr.sched.QSample(s, x0, t, eps)
	var labels *torch.Tensor
	if tr.cfg.NumClasses > 0 {
		null := make([]int64, n)
		for i := range null {
			null[i] = int64(tr.cfg.NumClasses)
		}
		labels = tr.toDevice(s, s.FromInt64s(null, int64(n)))
	}
	out := tr.model.Forward(s, xt, t, labels)
	a := diffusion.Gather(s, tr.sched.SqrtAlphasCumprod(), t, x0)
	b := diffusion.Gather(s, tr.sched.SqrtOneMinusAlphasCumprod(), t, x0)
	predX0, predEps := diffusion.SplitPrediction(s, tr.cfg.Target, out, xt, a, b)
	dims := []int64{1, 2, 3}
	epsErr := s.Sum(s.Mean(s.Square(s.Sub(predEps, eps)), dims, false), nil, false)
	x0Err := s.Sum(s.Mean(s.Square(s.Sub(s.Clamp(predX0, -1, 1), x0)), dims, false), nil, false)
	if err := s.Err(); err != nil {
		return 0, 0, fmt.Errorf("train: evaluate: %w", err)
	}
	e, err := epsErr.Item()
	if err != nil {
		return 0, 0, err
	}
	x, err := x0Err.Item()
	return e, x, err
}
