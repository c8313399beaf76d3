package torch

import (
	"fmt"
	"testing"
)

// BenchmarkPointwiseConvShapes times the small preset's 1x1 convolutions
// (channels in and out, map size: the residual blocks' shortcuts and the
// attention's q, k, v and projection) as a serving worker runs them (batch
// 8 on one thread) and as one request runs them (batch 1 on two threads):
// the shim's kernel ("kernel", and "kernel-avx2" with AVX2's vectors on a
// CPU with AVX-512) against libtorch's convolution ("libtorch",
// SetPointwiseConv(false)), without autograd, channels-last.
//
//	go test ./torch -run '^$' -bench PointwiseConvShapes
func BenchmarkPointwiseConvShapes(b *testing.B) {
	if !WinogradConvSupported() {
		b.Skip("the 1x1 kernel needs an x86-64 CPU with AVX-512 or AVX2")
	}
	before := NumThreads()
	defer SetNumThreads(before)
	for _, run := range []struct {
		batch   int64
		threads int
	}{{8, 1}, {1, 2}, {64, 2}} {
		for _, c := range []pointwiseCase{{0, 96, 32, 32, 32, true}, {0, 64, 32, 32, 32, true}, {0, 32, 64, 16, 16, true},
			{0, 128, 64, 16, 16, true}, {0, 96, 64, 16, 16, true}, {0, 64, 64, 8, 8, true}, {0, 128, 64, 8, 8, true},
			{0, 64, 64, 4, 4, true}} {
			c.n = run.batch
			paths := []string{"kernel", "libtorch"}
			if vectorISA(-1) == vectorsAVX512 {
				paths = append(paths, "kernel-avx2")
			}
			for _, path := range paths {
				name := fmt.Sprintf("%dx%dx%dx%d-to-%d/%d-threads/%s", c.n, c.ic, c.h, c.w, c.oc, run.threads, path)
				b.Run(name, func(b *testing.B) {
					if err := SetNumThreads(run.threads); err != nil {
						b.Fatal(err)
					}
					defer SetPointwiseConv(SetPointwiseConv(path != "libtorch"))
					if path == "kernel-avx2" {
						vectorISA(vectorsAVX2)
						defer vectorISA(vectorsAVX512)
					}
					s := NewScope(NoGrad)
					defer s.Close()
					x, w, bias := c.inputs(s, nil)
					for b.Loop() {
						s.Conv2d(x, w, bias, Conv2dOptions{}).Close()
					}
					if err := s.Err(); err != nil {
						b.Fatal(err)
					}
					flops := 2 * float64(c.n*c.ic*c.oc*c.h*c.w)
					b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
				})
			}
		}
	}
}
