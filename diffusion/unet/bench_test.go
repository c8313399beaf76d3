package unet

import (
	"testing"

	"github.com/ddpm-go/ddpm/diffusion/nn"
	"github.com/ddpm-go/ddpm/torch"
)

// benchModel builds a preset for use with perturbed weights (so no
// zero-initialised layer short-cuts anything).
func benchModel(b *testing.B, name string, use nn.Use) (*UNet, *torch.Generator) {
	b.Helper()
	u, err := build(preset(b, name), torch.CPU, torch.Float32, newGen(b, 1), use)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(u.Close)
	gen := newGen(b, 2)
	perturb(b, u, gen, 0.01)
	return u, gen
}

// BenchmarkForwardSmall times one sampling-style forward pass (inference
// mode) of the "small" preset on a batch of 16.
func BenchmarkForwardSmall(b *testing.B) {
	const batch = 16
	u, gen := benchModel(b, "small", nn.Inference)
	in := torch.NewScope(torch.NoGrad)
	defer in.Close()
	x, t, _ := randomInputs(in, u.Config(), batch, gen)
	for b.Loop() {
		s := torch.NewScope(torch.Inference)
		y := u.Forward(s, x, t, nil)
		if err := s.Err(); err != nil {
			b.Fatal(err)
		}
		if _, err := s.Sum(y, nil, false).Item(); err != nil { // waits for the result
			b.Fatal(err)
		}
		s.Close()
	}
	b.ReportMetric(float64(batch*b.N)/b.Elapsed().Seconds(), "images/s")
}

// BenchmarkTrainStepSmall times the model's part of a training step of the
// "small" preset on a batch of 64: forward with dropout, epsilon MSE loss,
// backward (the optimizer update is not included).
func BenchmarkTrainStepSmall(b *testing.B) {
	const batch = 64
	u, gen := benchModel(b, "small", nn.Training)
	u.SetTraining(true, gen)
	in := torch.NewScope(torch.NoGrad)
	defer in.Close()
	x, t, _ := randomInputs(in, u.Config(), batch, gen)
	noise := in.Randn(x.Shape(), torch.Float32, torch.CPU, gen)
	params := u.Params()
	for b.Loop() {
		s := torch.NewScope(torch.Grad)
		loss := s.MSELoss(u.Forward(s, x, t, nil), noise, torch.ReduceMean)
		s.Backward(loss)
		if err := s.Err(); err != nil {
			b.Fatal(err)
		}
		s.Close()
		for _, p := range params {
			if err := p.T.ZeroGrad(); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(batch*b.N)/b.Elapsed().Seconds(), "images/s")
}
