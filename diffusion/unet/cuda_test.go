package unet

import (
	"slices"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion/nn"
	"github.com/ddpm-go/ddpm/torch"
)

// On a GPU the model computes the function it computes on the CPU, in
// float32 and in the half-precision types, with dropout drawing from a CUDA
// generator.
func TestCUDAMatchesCPU(t *testing.T) {
	if !torch.CUDAAvailable() {
		t.Skip("no CUDA device")
	}
	dev := torch.CUDA(0)
	c := preset(t, "tiny")
	c.NumClasses = 3
	cpu := newModel(t, c, 1)
	gen := newGen(t, 2)
	perturb(t, cpu, gen, 0.05)
	s := torch.NewScope(torch.NoGrad)
	defer s.Close()
	x, tt, labels := randomInputs(s, c, 4, gen)
	want, err := cpu.Forward(s, x, tt, labels).Float32s()
	if err != nil || s.Err() != nil {
		t.Fatal(err, s.Err())
	}
	for _, dt := range []torch.DType{torch.Float32, torch.BFloat16, torch.Float16} {
		t.Run(dt.String(), func(t *testing.T) {
			cudaGen, err := torch.NewGenerator(3, dev)
			if err != nil {
				t.Fatal(err)
			}
			defer cudaGen.Close()
			gpu, err := New(c, dev, dt, cudaGen)
			if err != nil {
				t.Fatal(err)
			}
			defer gpu.Close()
			if err := nn.LoadStateDict(gpu.Params(), nn.StateDict(cpu.Params())); err != nil {
				t.Fatal(err)
			}
			y := gpu.Forward(s, s.ToDType(s.To(x, dev), dt), s.To(tt, dev), s.To(labels, dev))
			got, err := s.To(s.ToDType(y, torch.Float64), torch.CPU).Float64s()
			if err != nil || s.Err() != nil {
				t.Fatal(err, s.Err())
			}
			// TF32 convolutions (libtorch's default for cuDNN) and half
			// precision both round.
			tol := 1e-2
			if dt != torch.Float32 {
				tol = 5e-2
			}
			if r := relErr(want, got); r > tol {
				t.Errorf("relative error %g against the CPU, want < %g", r, tol)
			}

			g := torch.NewScope(torch.Grad)
			defer g.Close()
			gpu.SetTraining(true, cudaGen)
			xs := g.ToDType(g.To(x, dev), dt)
			out := gpu.Forward(g, xs, g.To(tt, dev), nil)
			g.Backward(g.Mean(g.ToDType(out, torch.Float32), nil, false))
			if err := g.Err(); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(out.Shape(), x.Shape()) {
				t.Errorf("training output shape %v", out.Shape())
			}
		})
	}
}
