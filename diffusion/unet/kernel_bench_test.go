package unet

import (
	"fmt"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/diffusion/nn"
	"github.com/ddpm-go/ddpm/torch"
)

// kernelCase is a sampling forward of the small preset: batch, intra-op
// threads and the model's arithmetic.
type kernelCase struct {
	batch     int64
	threads   int
	precision diffusion.Precision
}

// BenchmarkGroupNormKernel compares the shim's GroupNorm+SiLU kernel with
// libtorch's GroupNorm, SiLU and add (torch.SetGroupNormKernel) in the
// same model, taking turns round after round: the small preset's sampling
// forward as a serving worker runs it (batch 8, one thread), as one request
// runs it (batch 1, two threads) and as a large batch does (64, two
// threads), in float32, and at batch 8 and 1 in bf16 (skipped on a CPU without
// bfloat16 instructions). kernel/libtorch_time is the ratio of the median
// times (below 1: the kernel is faster); the outputs must agree to float
// rounding. (Training keeps libtorch's ops: the kernel runs without
// autograd only.)
//
//	go test ./diffusion/unet/ -run '^$' -bench GroupNormKernel -benchtime 1x
func BenchmarkGroupNormKernel(b *testing.B) {
	compareKernels(b, torch.SetGroupNormKernel, []kernelCase{
		{8, 1, diffusion.Float32}, {1, 2, diffusion.Float32}, {64, 2, diffusion.Float32},
		{8, 1, diffusion.BF16}, {1, 2, diffusion.BF16},
	})
}

// BenchmarkWinogradConv compares the shim's Winograd kernel for 3x3
// convolutions with libtorch's convolution (torch.SetWinogradConv) in the
// same way, in float32 (the kernel's only dtype; skipped on a CPU without
// AVX-512 or AVX2).
//
//	go test ./diffusion/unet/ -run '^$' -bench WinogradConv -benchtime 1x
func BenchmarkWinogradConv(b *testing.B) {
	if !torch.WinogradConvSupported() {
		b.Skip("the Winograd kernel needs an x86-64 CPU with AVX-512 or AVX2")
	}
	compareKernels(b, torch.SetWinogradConv, []kernelCase{
		{8, 1, diffusion.Float32}, {1, 2, diffusion.Float32}, {64, 2, diffusion.Float32},
	})
}

// BenchmarkPointwiseConv compares the shim's 1x1 convolution kernel with
// libtorch's convolution (torch.SetPointwiseConv) in the same way, in
// float32 (skipped on a CPU without AVX-512 or AVX2).
//
//	go test ./diffusion/unet/ -run '^$' -bench PointwiseConv -benchtime 1x
func BenchmarkPointwiseConv(b *testing.B) {
	if !torch.WinogradConvSupported() {
		b.Skip("the 1x1 kernel needs an x86-64 CPU with AVX-512 or AVX2")
	}
	compareKernels(b, torch.SetPointwiseConv, []kernelCase{
		{8, 1, diffusion.Float32}, {1, 2, diffusion.Float32}, {64, 2, diffusion.Float32},
	})
}

// BenchmarkNarrowConv compares the shim's kernel for 3x3 convolutions into
// few channels (the U-Net's last) with libtorch's convolution
// (torch.SetNarrowConv) in the same way, in float32 (skipped on a CPU
// without AVX-512 or AVX2).
//
//	go test ./diffusion/unet/ -run '^$' -bench NarrowConv -benchtime 1x
func BenchmarkNarrowConv(b *testing.B) {
	if !torch.WinogradConvSupported() {
		b.Skip("the narrow kernel needs an x86-64 CPU with AVX-512 or AVX2")
	}
	compareKernels(b, torch.SetNarrowConv, []kernelCase{
		{8, 1, diffusion.Float32}, {1, 2, diffusion.Float32}, {64, 2, diffusion.Float32},
	})
}

// BenchmarkIm2colConv compares the shim's kernel for the strided and
// few-channel 3x3 convolutions (the U-Net's downsampling and first
// convolutions) with libtorch's convolution (torch.SetIm2colConv) in the
// same way, in float32 (skipped on a CPU without AVX-512 or AVX2).
//
//	go test ./diffusion/unet/ -run '^$' -bench Im2colConv -benchtime 1x
func BenchmarkIm2colConv(b *testing.B) {
	if !torch.WinogradConvSupported() {
		b.Skip("the im2col kernel needs an x86-64 CPU with AVX-512 or AVX2")
	}
	compareKernels(b, torch.SetIm2colConv, []kernelCase{
		{8, 1, diffusion.Float32}, {1, 2, diffusion.Float32}, {1, 1, diffusion.Float32}, {64, 2, diffusion.Float32},
	})
}

// compareKernels times each case's forward with the kernel that set turns
// on and off, taking turns, and reports their medians and ratio.
func compareKernels(b *testing.B, set func(on bool) bool, cases []kernelCase) {
	for _, c := range cases {
		b.Run(fmt.Sprintf("small-forward-batch%d-%dthreads-%s", c.batch, c.threads, c.precision), func(b *testing.B) {
			if err := c.precision.Check(torch.CPU); err != nil {
				b.Skip(err)
			}
			defer torch.SetNumThreads(torch.NumThreads())
			if err := torch.SetNumThreads(c.threads); err != nil {
				b.Fatal(err)
			}
			defer set(set(true))
			u, gen := benchModel(b, "small", nn.Inference)
			in := torch.NewScope(torch.NoGrad)
			defer in.Close()
			x, t, _ := randomInputs(in, u.Config(), c.batch, gen)
			noise := in.Randn(x.Shape(), torch.Float32, torch.CPU, gen)
			step := benchStep(b, c.precision, false, x, t, noise)
			with := func(kernel bool) []float32 {
				set(kernel)
				return step(u)
			}
			diff, scale := maxAbsDiff(with(true), with(false))
			tol := 1e-4 * max(1, scale)
			if c.precision != diffusion.Float32 {
				tol = 0.02 * max(1, scale)
			}
			if !(diff <= tol) {
				b.Fatalf("the kernel's and libtorch's outputs differ by up to %g (largest value %g), want at most %g", diff, scale, tol)
			}
			rounds := max(b.N, 9)
			k, l := takeTurns(rounds, func() { with(true) }, func() { with(false) })
			b.Logf("median of %d rounds: kernel %.2f ms, libtorch %.2f ms; largest output difference %.3g", rounds, k*1e3, l*1e3, diff)
			b.ReportMetric(k*1e9, "ns/op")
			b.ReportMetric(k*1e3, "kernel_ms")
			b.ReportMetric(l*1e3, "libtorch_ms")
			b.ReportMetric(k/l, "kernel/libtorch_time")
		})
	}
}
