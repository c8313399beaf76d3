package sampler_test

import (
	"context"
	"fmt"
	"math"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/diffusion/sampler"
	"github.com/ddpm-go/ddpm/torch"
)

// noNoise is a model that always predicts ε = 0: every sample is then
// taken for clean data that was only scaled.
type noNoise struct{}

func (noNoise) Forward(s *torch.Scope, x, t, labels *torch.Tensor) *torch.Tensor {
	return s.MulScalar(x, 0)
}

// Deterministic DDIM with a model that sees no noise maps x_T to
// x_T/sqrt(ᾱ_T), the clean image its prediction implies.
func ExampleSample() {
	sched, err := diffusion.NewSchedule(diffusion.ScheduleConfig{}) // DDPM's linear schedule, T = 1000
	if err != nil {
		panic(err)
	}
	s := torch.NewScope(torch.Inference)
	defer s.Close()
	xT := s.Full([]int64{1, 1, 2, 2}, 1, torch.Float32, torch.CPU)
	x0, err := sampler.Sample(context.Background(), noNoise{}, xT, sched, nil, sampler.Options{Sampler: sampler.DDIM, Steps: 10})
	if err != nil {
		panic(err)
	}
	defer x0.Close()
	v, _ := x0.Float32s()
	fmt.Printf("x0 = %.1f, 1/sqrt(alphabar_T) = %.1f\n", v[0], 1/math.Sqrt(sched.At(sched.T()-1).AlphaCumprod))
	// Output: x0 = 157.4, 1/sqrt(alphabar_T) = 157.4
}
