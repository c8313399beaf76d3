package torch

import (
	"fmt"
	"testing"
)

// BenchmarkWinogradConvShapes times the small preset's 3x3 convolutions
// (channels in and out, map size), and two of the cifar10 preset's, as a
// serving worker runs them (batch 8 on one thread) and as one request runs
// them (batch 1 on two threads): the
// shim's Winograd kernel ("winograd", and "winograd-avx2" with AVX2's
// vectors on a CPU with AVX-512) against libtorch's convolution
// ("libtorch", SetWinogradConv(false)), without autograd, channels-last.
// DNNL_MAX_CPU_ISA=AVX2 in the environment holds libtorch's oneDNN to AVX2
// too, for the comparison an AVX2 machine would give:
//
//	go test ./torch -run '^$' -bench WinogradConvShapes
//	DNNL_MAX_CPU_ISA=AVX2 go test ./torch -run '^$' -bench 'WinogradConvShapes/.*/.*/(winograd-avx2|libtorch)'
func BenchmarkWinogradConvShapes(b *testing.B) {
	if !WinogradConvSupported() {
		b.Skip("the Winograd kernel needs an x86-64 CPU with AVX-512 or AVX2")
	}
	before := NumThreads()
	defer SetNumThreads(before)
	for _, run := range []struct {
		batch   int64
		threads int
	}{{8, 1}, {1, 2}} {
		for _, c := range []winogradCase{{0, 32, 32, 32, 32, true}, {0, 64, 64, 32, 32, true}, {0, 96, 32, 32, 32, true},
			{0, 64, 64, 16, 16, true}, {0, 128, 64, 16, 16, true}, {0, 64, 64, 8, 8, true}, {0, 64, 64, 4, 4, true},
			{0, 256, 256, 16, 16, true}, {0, 256, 256, 8, 8, true}} { // the last two: the cifar10 preset's
			c.n = run.batch
			paths := []string{"winograd", "libtorch"}
			if vectorISA(-1) == vectorsAVX512 {
				paths = append(paths, "winograd-avx2")
			}
			for _, path := range paths {
				name := fmt.Sprintf("%dx%dx%dx%d-to-%d/%d-threads/%s", c.n, c.ic, c.h, c.w, c.oc, run.threads, path)
				b.Run(name, func(b *testing.B) {
					if err := SetNumThreads(run.threads); err != nil {
						b.Fatal(err)
					}
					defer SetWinogradConv(SetWinogradConv(path != "libtorch"))
					if path == "winograd-avx2" {
						vectorISA(vectorsAVX2)
						defer vectorISA(vectorsAVX512)
					}
					s := NewScope(NoGrad)
					defer s.Close()
					x, w, bias := c.inputs(s, nil)
					for b.Loop() {
						s.Conv2d(x, w, bias, pad1).Close()
					}
					if err := s.Err(); err != nil {
						b.Fatal(err)
					}
					flops := 2 * 9 * float64(c.n*c.ic*c.oc*c.h*c.w)
					b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "direct-GFLOP/s")
				})
			}
		}
	}
}
