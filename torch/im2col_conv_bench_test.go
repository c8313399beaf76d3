package torch

import (
	"fmt"
	"testing"
)

// BenchmarkIm2colConvShapes times the 3x3 convolutions the im2col kernel
// takes in the small preset (its first convolution, from the image's one
// channel, and its downsampling ones, stride 2) and the cifar10 preset (from
// three channels; 128 and 256 channels, stride 2), as a serving worker runs
// them (batch 8 on one thread), as one request runs them (batch 1 on two
// threads) and as a large batch does (64 on two): the shim's kernel
// ("kernel", and "kernel-avx2" with AVX2's vectors on a CPU with AVX-512)
// against libtorch's convolution ("libtorch", SetIm2colConv(false)),
// without autograd, channels-last.
//
//	go test ./torch -run '^$' -bench Im2colConvShapes
func BenchmarkIm2colConvShapes(b *testing.B) {
	var shapes []convShape
	for _, c := range []struct {
		winogradCase
		stride int64
	}{
		{winogradCase{0, 1, 32, 32, 32, true}, 1}, {winogradCase{0, 32, 32, 32, 32, true}, 2},
		{winogradCase{0, 64, 64, 16, 16, true}, 2}, {winogradCase{0, 64, 64, 8, 8, true}, 2},
		// the cifar10 preset's
		{winogradCase{0, 3, 128, 32, 32, true}, 1}, {winogradCase{0, 128, 128, 32, 32, true}, 2},
		{winogradCase{0, 256, 256, 16, 16, true}, 2}, {winogradCase{0, 256, 256, 8, 8, true}, 2},
	} {
		out := (c.h-1)/c.stride + 1
		shapes = append(shapes, convShape{
			name: fmt.Sprintf("x%dx%dx%d-to-%d-stride-%d", c.ic, c.h, c.w, c.oc, c.stride),
			inputs: func(s *Scope, batch int64) (x, w, b *Tensor) {
				c.n = batch
				return c.inputs(s, nil)
			},
			o:     im2colOptions(c.stride),
			flops: func(batch int64) float64 { return 2 * 9 * float64(batch*c.ic*c.oc*out*out) },
		})
	}
	benchConvShapes(b, SetIm2colConv, [][2]int{{8, 1}, {1, 2}, {64, 2}}, shapes, "GFLOP/s")
}
