package optim_test

import (
	"testing"

	"github.com/ddpm-go/ddpm/diffusion/optim"
	"github.com/ddpm-go/ddpm/diffusion/unet"
	"github.com/ddpm-go/ddpm/torch"
)

// BenchmarkAdamW times one optimizer step over the small preset's
// parameters with libtorch's multi-tensor kernels and with a per-tensor loop;
// run both in one invocation and compare the ns/op.
func BenchmarkAdamW(b *testing.B) {
	cfg, err := unet.Preset("small")
	if err != nil {
		b.Fatal(err)
	}
	model, err := unet.NewForTraining(cfg, torch.CPU, torch.Float32, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer model.Close()
	// Give every parameter a gradient: backward of the sum of all weights.
	s := torch.NewScope(torch.Grad)
	var sums []*torch.Tensor
	for _, p := range model.Params() {
		sums = append(sums, s.Sum(p.T, nil, false))
	}
	s.Backward(s.Sum(s.Stack(sums, 0), nil, false))
	if err := s.Err(); err != nil {
		b.Fatal(err)
	}
	s.Close()
	for _, mode := range []struct {
		name      string
		perTensor bool
	}{{"foreach", false}, {"per-tensor", true}} {
		b.Run(mode.name, func(b *testing.B) {
			opt, err := optim.NewAdamW(model.Params(), optim.AdamWConfig{PerTensor: mode.perTensor})
			if err != nil {
				b.Fatal(err)
			}
			defer opt.Close()
			b.ResetTimer()
			for range b.N {
				if _, err := opt.Step(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
