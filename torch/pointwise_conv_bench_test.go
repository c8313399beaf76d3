package torch

import (
	"fmt"
	"testing"
)

// BenchmarkPointwiseConvShapes times the small preset's 1x1 convolutions
// (channels in and out, map size: the residual blocks' shortcuts and the
// attention's q, k, v and projection), and the cifar10 preset's attention's
// (256 channels at 16x16), as a serving worker runs them (batch
// 8 on one thread), as one request runs them (batch 1 on two threads) and
// as a large batch does (64 on two): the shim's kernel ("kernel", and
// "kernel-avx2" with AVX2's vectors on a CPU with AVX-512) against
// libtorch's convolution ("libtorch", SetPointwiseConv(false)), without
// autograd, channels-last.
//
//	go test ./torch -run '^$' -bench PointwiseConvShapes
func BenchmarkPointwiseConvShapes(b *testing.B) {
	var shapes []convShape
	for _, c := range []pointwiseCase{{0, 96, 32, 32, 32, true}, {0, 64, 32, 32, 32, true}, {0, 32, 64, 16, 16, true},
		{0, 128, 64, 16, 16, true}, {0, 96, 64, 16, 16, true}, {0, 64, 64, 8, 8, true}, {0, 128, 64, 8, 8, true},
		{0, 64, 64, 4, 4, true}, {0, 256, 256, 16, 16, true}} { // the last: the cifar10 preset's attention
		shapes = append(shapes, convShape{
			name: fmt.Sprintf("x%dx%dx%d-to-%d", c.ic, c.h, c.w, c.oc),
			inputs: func(s *Scope, batch int64) (x, w, b *Tensor) {
				c.n = batch
				return c.inputs(s, nil)
			},
			flops: func(batch int64) float64 { return 2 * float64(batch*c.ic*c.oc*c.h*c.w) },
		})
	}
	benchConvShapes(b, SetPointwiseConv, [][2]int{{8, 1}, {1, 2}, {64, 2}}, shapes, "GFLOP/s")
}
