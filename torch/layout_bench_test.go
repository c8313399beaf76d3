package torch

import (
	"fmt"
	"testing"
)

// BenchmarkMemoryLayout times the U-Net's feature-map operations in NCHW
// (contiguous) and channels-last (NHWC) memory, in float32 and bfloat16, on
// a batch of 16 maps of 128 channels at 32x32 (the cifar10 preset's first
// level): a 3x3 convolution 128 -> 128 (reported in GFLOP/s too), GroupNorm
// with 32 groups (and with 64 on 16x16 maps), nearest 2x upsampling from 16x16, and the concatenation
// of two maps along the channels. Inputs are laid out before the timing;
// each operation keeps the layout of its input.
func BenchmarkMemoryLayout(b *testing.B) {
	const n, c, hw = 16, 128, 32
	g, _ := NewGenerator(1, CPU)
	defer g.Close()
	layouts := []struct {
		name string
		lay  func(s *Scope, t *Tensor) *Tensor
	}{
		{"nchw", func(s *Scope, t *Tensor) *Tensor { return s.Contiguous(t) }},
		{"channels-last", func(s *Scope, t *Tensor) *Tensor { return s.ChannelsLast(t) }},
	}
	for _, dt := range []DType{Float32, BFloat16} {
		for _, l := range layouts {
			in := NewScope(NoGrad)
			x := in.Keep(l.lay(in, in.ToDType(in.Randn([]int64{n, c, hw, hw}, Float32, CPU, g), dt)))
			y := in.Keep(l.lay(in, in.ToDType(in.Randn([]int64{n, c, hw, hw}, Float32, CPU, g), dt)))
			small := in.Keep(l.lay(in, in.ToDType(in.Randn([]int64{n, c, hw / 2, hw / 2}, Float32, CPU, g), dt)))
			w := in.Keep(l.lay(in, in.ToDType(in.MulScalar(in.Randn([]int64{c, c, 3, 3}, Float32, CPU, g), 0.03), dt)))
			gw := in.Keep(in.ToDType(in.Ones([]int64{c}, Float32, CPU), dt))
			gb := in.Keep(in.ToDType(in.Zeros([]int64{c}, Float32, CPU), dt))
			if err := in.Err(); err != nil {
				b.Fatal(err)
			}
			in.Close()
			ops := []struct {
				name  string
				flops float64
				f     func(s *Scope) *Tensor
			}{
				{"conv3x3", 2 * n * c * c * 9 * hw * hw, func(s *Scope) *Tensor {
					return s.Conv2d(x, w, nil, Conv2dOptions{Padding: [2]int64{1, 1}})
				}},
				{"groupnorm", 0, func(s *Scope) *Tensor { return s.GroupNorm(x, 32, gw, gb, 1e-5) }},
				// Below 32x32 with under 8 channels per group the shim runs
				// a channels-last map through the NCHW kernel on a copy.
				{"groupnorm-16x16-2-per-group", 0, func(s *Scope) *Tensor { return s.GroupNorm(small, 64, gw, gb, 1e-5) }},
				{"upsample", 0, func(s *Scope) *Tensor { return s.UpsampleNearest2d(small, hw, hw) }},
				{"concat", 0, func(s *Scope) *Tensor { return s.Cat([]*Tensor{x, y}, 1) }},
			}
			for _, op := range ops {
				b.Run(fmt.Sprintf("%s/%s/%s", op.name, dt, l.name), func(b *testing.B) {
					s := NewScope(Inference)
					defer s.Close()
					for b.Loop() {
						op.f(s).Close()
					}
					if err := s.Err(); err != nil {
						b.Fatal(err)
					}
					if op.flops > 0 {
						b.ReportMetric(op.flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
					}
				})
			}
			for _, t := range []*Tensor{x, y, small, w, gw, gb} {
				t.Close()
			}
		}
	}
}
