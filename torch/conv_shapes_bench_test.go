package torch

import (
	"fmt"
	"testing"
)

// convShape is one convolution of a shapes benchmark: its name, its
// inputs at a batch size, its options and its arithmetic in flops.
type convShape struct {
	name   string
	inputs func(s *Scope, batch int64) (x, w, b *Tensor)
	o      Conv2dOptions
	flops  func(batch int64) float64
}

// benchConvShapes times each shape at each (batch, threads) of runs with
// one of the shim's kernels ("kernel", and "kernel-avx2" with AVX2's
// vectors on a CPU with AVX-512) and with libtorch's convolution
// ("libtorch"), set choosing between the two, without autograd, reporting
// GFLOP/s (metric names what the flops count).
func benchConvShapes(b *testing.B, set func(on bool) bool, runs [][2]int, shapes []convShape, metric string) {
	if !WinogradConvSupported() {
		b.Skip("the shim's convolution kernels need an x86-64 CPU with AVX-512 or AVX2")
	}
	before := NumThreads()
	defer SetNumThreads(before)
	for _, run := range runs {
		batch, threads := int64(run[0]), run[1]
		for _, c := range shapes {
			paths := []string{"kernel", "libtorch"}
			if vectorISA(-1) == vectorsAVX512 {
				paths = append(paths, "kernel-avx2")
			}
			for _, path := range paths {
				b.Run(fmt.Sprintf("%d%s/%d-threads/%s", batch, c.name, threads, path), func(b *testing.B) {
					if err := SetNumThreads(threads); err != nil {
						b.Fatal(err)
					}
					defer set(set(path != "libtorch"))
					if path == "kernel-avx2" {
						vectorISA(vectorsAVX2)
						defer vectorISA(vectorsAVX512)
					}
					s := NewScope(NoGrad)
					defer s.Close()
					x, w, bias := c.inputs(s, batch)
					for b.Loop() {
						s.Conv2d(x, w, bias, c.o).Close()
					}
					if err := s.Err(); err != nil {
						b.Fatal(err)
					}
					b.ReportMetric(c.flops(batch)*float64(b.N)/b.Elapsed().Seconds()/1e9, metric)
				})
			}
		}
	}
}

// BenchmarkNarrowConvShapes times 3x3 convolutions into few channels: the
// small preset's last (32 channels into 1 at 32x32) and the cifar10
// preset's (128 into 3), as benchConvShapes does.
//
//	go test ./torch -run '^$' -bench NarrowConvShapes
func BenchmarkNarrowConvShapes(b *testing.B) {
	var shapes []convShape
	for _, c := range [][3]int64{{32, 1, 32}, {128, 3, 32}} {
		ic, oc, hw := c[0], c[1], c[2]
		shapes = append(shapes, convShape{
			name: fmt.Sprintf("x%dx%dx%d-to-%d", ic, hw, hw, oc),
			inputs: func(s *Scope, batch int64) (x, w, b *Tensor) {
				return narrowInputs(s, nil, batch, ic, oc, hw, hw, true)
			},
			o:     pad1,
			flops: func(batch int64) float64 { return 2 * 9 * float64(batch*ic*oc*hw*hw) },
		})
	}
	benchConvShapes(b, SetNarrowConv, [][2]int{{8, 1}, {1, 2}}, shapes, "GFLOP/s")
}
