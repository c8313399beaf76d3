package torch

import (
	"fmt"
	"testing"
)

// BenchmarkWinogradConvShapes times the small preset's 3x3 convolutions
// (channels in and out, map size), and two of the cifar10 preset's, as a
// serving worker runs them (batch 8 on one thread) and as one request runs
// them (batch 1 on two threads): the shim's Winograd kernel ("kernel", and
// "kernel-avx2" with AVX2's vectors on a CPU with AVX-512) against
// libtorch's convolution ("libtorch", SetWinogradConv(false)), without
// autograd, channels-last. DNNL_MAX_CPU_ISA=AVX2 in the environment holds
// libtorch's oneDNN to AVX2 too, for the comparison an AVX2 machine would
// give:
//
//	go test ./torch -run '^$' -bench WinogradConvShapes
//	DNNL_MAX_CPU_ISA=AVX2 go test ./torch -run '^$' -bench 'WinogradConvShapes/.*/.*/(kernel-avx2|libtorch)'
func BenchmarkWinogradConvShapes(b *testing.B) {
	var shapes []convShape
	for _, c := range []winogradCase{{0, 32, 32, 32, 32, true}, {0, 64, 64, 32, 32, true}, {0, 96, 32, 32, 32, true},
		{0, 64, 64, 16, 16, true}, {0, 128, 64, 16, 16, true}, {0, 64, 64, 8, 8, true}, {0, 64, 64, 4, 4, true},
		{0, 256, 256, 16, 16, true}, {0, 256, 256, 8, 8, true}} { // the last two: the cifar10 preset's
		shapes = append(shapes, convShape{
			name: fmt.Sprintf("x%dx%dx%d-to-%d", c.ic, c.h, c.w, c.oc),
			inputs: func(s *Scope, batch int64) (x, w, b *Tensor) {
				c.n = batch
				return c.inputs(s, nil)
			},
			o:     pad1,
			flops: func(batch int64) float64 { return 2 * 9 * float64(batch*c.ic*c.oc*c.h*c.w) },
		})
	}
	benchConvShapes(b, SetWinogradConv, [][2]int{{8, 1}, {1, 2}}, shapes, "direct-GFLOP/s")
}
