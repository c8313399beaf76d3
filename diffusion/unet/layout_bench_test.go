package unet

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/diffusion/nn"
	"github.com/ddpm-go/ddpm/torch"
)

// BenchmarkChannelsLast compares the two memory layouts of the U-Net's
// convolutions on the CPU (see nn.Conv2d and nn.Use), the same weights in
// channels-last and NCHW (nn.ChannelsLastEnv=1 and 0): a sampling forward of
// the "small" preset at batch 1 and 16 (what New's channels-last is for)
// and its training step (forward, epsilon MSE, backward) at batch 64, in
// float32 and bf16 (skipped on a CPU without bfloat16 instructions), and
// the "cifar10" preset's training step at batch 8 in both (what
// NewForTraining's NCHW is for). The two models take turns, round after
// round, so that load from elsewhere falls on both; cl/nchw_time is the
// ratio of their median wall-clock times (below 1: channels-last is
// faster). Both outputs must agree to float rounding (bf16's in bf16).
func BenchmarkChannelsLast(b *testing.B) {
	cases := []struct {
		preset    string
		batch     int64
		train     bool
		precision diffusion.Precision
	}{
		{"small", 1, false, diffusion.Float32}, {"small", 16, false, diffusion.Float32},
		{"small", 1, false, diffusion.BF16}, {"small", 16, false, diffusion.BF16},
		{"small", 64, true, diffusion.Float32}, {"small", 64, true, diffusion.BF16},
		{"cifar10", 8, true, diffusion.Float32}, {"cifar10", 8, true, diffusion.BF16},
	}
	for _, c := range cases {
		mode := "forward"
		if c.train {
			mode = "train"
		}
		b.Run(fmt.Sprintf("%s-%s-batch%d-%s", c.preset, mode, c.batch, c.precision), func(b *testing.B) {
			if err := c.precision.Check(torch.CPU); err != nil {
				b.Skip(err)
			}
			var models [2]*UNet // NCHW, channels-last
			for i, env := range []string{"0", "1"} {
				b.Setenv(nn.ChannelsLastEnv, env)
				models[i], _ = benchModel(b, c.preset, nn.Inference) // the variable decides
			}
			gen := newGen(b, 3)
			in := torch.NewScope(torch.NoGrad)
			defer in.Close()
			x, t, _ := randomInputs(in, models[0].Config(), c.batch, gen)
			noise := in.Randn(x.Shape(), torch.Float32, torch.CPU, gen)
			step := benchStep(b, c.precision, c.train, x, t, noise)
			nchw, cl := step(models[0]), step(models[1])
			diff, scale := maxAbsDiff(nchw, cl)
			tol := 1e-5 * max(1, scale)
			if c.precision != diffusion.Float32 {
				tol = 0.02 * max(1, scale)
			}
			if !(diff <= tol) {
				b.Fatalf("channels-last and NCHW outputs differ by up to %g (largest value %g), want at most %g", diff, scale, tol)
			}
			n, l := takeTurns(max(b.N, 9), func() { step(models[0]) }, func() { step(models[1]) })
			b.Logf("median of %d rounds: NCHW %.2f ms, channels-last %.2f ms; largest output difference %.3g", max(b.N, 9), n*1e3, l*1e3, diff)
			b.ReportMetric(l*1e9, "ns/op")
			b.ReportMetric(n*1e3, "nchw_ms")
			b.ReportMetric(l*1e3, "cl_ms")
			b.ReportMetric(l/n, "cl/nchw_time")
		})
	}
}

// benchStep returns one sampling forward (train false) or training step
// (forward, epsilon MSE, backward, gradients zeroed) of a model at
// precision p on x and t, returning the output or the loss.
func benchStep(b *testing.B, p diffusion.Precision, train bool, x, t, noise *torch.Tensor) func(u *UNet) []float32 {
	return func(u *UNet) []float32 {
		m := p.Wrap(u)
		if train {
			s := torch.NewScope(torch.Grad)
			defer s.Close()
			loss := s.MSELoss(m.Forward(s, x, t, nil), noise, torch.ReduceMean)
			s.Backward(loss)
			v, err := loss.Float32s()
			if err != nil {
				b.Fatal(err)
			}
			for _, p := range u.Params() {
				if err := p.T.ZeroGrad(); err != nil {
					b.Fatal(err)
				}
			}
			return v
		}
		s := torch.NewScope(torch.Inference)
		defer s.Close()
		v, err := m.Forward(s, x, t, nil).Float32s()
		if err != nil {
			b.Fatal(err)
		}
		return v
	}
}

// takeTurns runs a then b, rounds times, and returns the median seconds of
// each: load from elsewhere falls on both.
func takeTurns(rounds int, a, b func()) (float64, float64) {
	var times [2][]float64
	for range rounds {
		for i, f := range []func(){a, b} {
			start := time.Now()
			f()
			times[i] = append(times[i], time.Since(start).Seconds())
		}
	}
	med := func(v []float64) float64 { slices.Sort(v); return v[len(v)/2] }
	return med(times[0]), med(times[1])
}
