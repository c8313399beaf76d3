package torch

import (
	"fmt"
	"testing"
)

// BenchmarkGroupNormSiLU times SiLU(GroupNorm(x + shift)) on channels-last
// maps of the small preset's U-Net, as a serving worker runs it (batch 8 on
// one thread) and as one request runs it (batch 1 on two threads): the
// shim's kernel ("kernel") against libtorch's add, GroupNorm and SiLU
// ("libtorch", SetGroupNormKernel(false)), without autograd, and the kernel
// on a bfloat16 map under bf16 autocast ("kernel-bf16", what a bf16
// sampling forward runs; skipped on a CPU without bfloat16 instructions).
//
//	go test ./torch -run '^$' -bench GroupNormSiLU
func BenchmarkGroupNormSiLU(b *testing.B) {
	before := NumThreads()
	defer SetNumThreads(before)
	for _, c := range []struct {
		batch, channels, size int64
		threads               int
	}{{8, 32, 32, 1}, {8, 64, 16, 1}, {8, 64, 8, 1}, {1, 32, 32, 2}, {1, 64, 16, 2}} {
		for _, path := range []string{"kernel", "libtorch", "kernel-bf16"} {
			name := fmt.Sprintf("%dx%dx%dx%d/%d-threads/%s", c.batch, c.channels, c.size, c.size, c.threads, path)
			b.Run(name, func(b *testing.B) {
				if err := SetNumThreads(c.threads); err != nil {
					b.Fatal(err)
				}
				defer SetGroupNormKernel(SetGroupNormKernel(path != "libtorch"))
				s, dt := NewScope(Inference), Float32
				if path == "kernel-bf16" {
					s.Close()
					if !CPUHasBF16() {
						b.Skip("no bfloat16 instructions")
					}
					var err error
					if s, err = NewAutocastScope(Inference, BFloat16); err != nil {
						b.Fatal(err)
					}
					dt = BFloat16
				}
				defer s.Close()
				x := s.ChannelsLast(s.ToDType(s.Randn([]int64{c.batch, c.channels, c.size, c.size}, Float32, CPU, nil), dt))
				shift := s.ToDType(s.Randn([]int64{c.batch, c.channels}, Float32, CPU, nil), dt)
				w := s.Randn([]int64{c.channels}, Float32, CPU, nil)
				bias := s.Randn([]int64{c.channels}, Float32, CPU, nil)
				for b.Loop() {
					s.GroupNormSiLU(x, shift, 8, w, bias, 1e-5).Close()
				}
				if err := s.Err(); err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(x.Numel())*float64(b.N)/b.Elapsed().Seconds()/1e9, "Gvalues/s")
			})
		}
	}
}
