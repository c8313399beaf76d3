package torch

// #include "ddpm_torch.h"
import "C"

import (
	"fmt"
	"sync/atomic"
)

// Matmul is torch.matmul (batched and broadcast).
func (s *Scope) Matmul(a, b *Tensor) *Tensor {
	if !s.ready("matmul", a, b) {
		return nil
	}
	var out C.ddpm_tensor
	return s.wrap("matmul", C.ddpm_matmul(s.mode, a.h, b.h, &out), out, a, b)
}

// BMM multiplies batches of matrices: (B, N, K) x (B, K, M) -> (B, N, M).
func (s *Scope) BMM(a, b *Tensor) *Tensor {
	if !s.ready("bmm", a, b) {
		return nil
	}
	var out C.ddpm_tensor
	return s.wrap("bmm", C.ddpm_bmm(s.mode, a.h, b.h, &out), out, a, b)
}

// Linear is x W^T + b; bias may be nil.
func (s *Scope) Linear(x, w, bias *Tensor) *Tensor {
	if !s.ready("linear", x, w) || !s.readyOptional("linear", bias) {
		return nil
	}
	var out C.ddpm_tensor
	return s.wrap("linear", C.ddpm_linear(s.mode, x.h, w.h, opt(bias), &out), out, x, w, bias)
}

// Conv2dOptions are the hyper-parameters of a 2-D convolution. Zero values
// mean stride 1, padding 0, dilation 1, one group.
type Conv2dOptions struct {
	Stride, Padding, Dilation [2]int64
	Groups                    int64
	// Upsample, when above 1 (0 and 1: none), convolves x repeated
	// Upsample times along each spatial axis (UpsampleNearest2d to Upsample
	// times its size). Where the shim's Winograd kernel runs the
	// convolution it reads that map from x without making it, with the
	// same values.
	Upsample int64
	// Residual, when set, is added to the output as Add would add it: a
	// residual connection. Where one of the shim's kernels runs the
	// convolution and Residual is float32 of the output's shape,
	// channels-last, the kernel adds it in its last pass instead of a pass
	// of its own, with the same values.
	Residual *Tensor
}

// Conv2d convolves x (N, C, H, W) with w (O, C/groups, kH, kW); bias may be nil.
// Without autograd or autocast on a CPU with AVX-512 or AVX2, on a float32
// channels-last x, four kernels of the shim run the convolutions they take:
// a 3x3 convolution with stride 1 and padding 1 whose channels in and out
// are multiples of 16 runs the Winograd kernel (csrc/winograd_conv.cpp,
// SetWinogradConv): 0.14-0.52 of libtorch's time on the small preset's
// shapes, up to 1.5e-6 relative L2 error against a float64 convolution
// where libtorch's is up to 6e-7; a 1x1 convolution with stride 1 and no
// padding whose channels out are a multiple of 16 runs as one matrix
// product (csrc/pointwise_conv.cpp, SetPointwiseConv); a 3x3 convolution
// with stride 1 and padding 1 from channels in sixteens into 1 to 8
// channels runs directly (csrc/narrow_conv.cpp, SetNarrowConv); the other
// 3x3 convolutions with stride 1 or 2 and padding 1 into channels in
// sixteens (a U-Net's downsampling, its first convolution) run as products
// of gathered patches (csrc/im2col_conv.cpp, SetIm2colConv).
func (s *Scope) Conv2d(x, w, bias *Tensor, o Conv2dOptions) *Tensor {
	if !s.ready("conv2d", x, w) || !s.readyOptional("conv2d", bias) || !s.readyOptional("conv2d", o.Residual) {
		return nil
	}
	if o.Upsample < 0 {
		s.fail(&Error{Op: "conv2d", Msg: fmt.Sprintf("upsampling factor %d, want 1 or more (0: none)", o.Upsample)})
		return nil
	}
	stride, dil := o.Stride, o.Dilation
	for i := range 2 {
		if stride[i] == 0 {
			stride[i] = 1
		}
		if dil[i] == 0 {
			dil[i] = 1
		}
	}
	groups, up := max(o.Groups, 1), max(o.Upsample, 1)
	pad := o.Padding
	var kernels C.int32_t
	if !winogradConvOff.Load() {
		kernels |= C.DDPM_CONV_WINOGRAD
	}
	if !pointwiseConvOff.Load() {
		kernels |= C.DDPM_CONV_POINTWISE
	}
	if !narrowConvOff.Load() {
		kernels |= C.DDPM_CONV_NARROW
	}
	if !im2colConvOff.Load() {
		kernels |= C.DDPM_CONV_IM2COL
	}
	var out C.ddpm_tensor
	e := C.ddpm_conv2d(s.mode, x.h, C.int64_t(up), w.h, opt(bias), opt(o.Residual), (*C.int64_t)(&stride[0]),
		(*C.int64_t)(&pad[0]), (*C.int64_t)(&dil[0]), C.int64_t(groups), kernels, &out)
	return s.wrap("conv2d", e, out, x, w, bias, o.Residual)
}

// winogradConvOff, pointwiseConvOff, narrowConvOff and im2colConvOff say
// whether Conv2d leaves the convolutions of the shim's Winograd, 1x1,
// narrow and im2col kernels to libtorch (SetWinogradConv, SetPointwiseConv,
// SetNarrowConv, SetIm2colConv).
var winogradConvOff, pointwiseConvOff, narrowConvOff, im2colConvOff atomic.Bool

// SetWinogradConv chooses between the shim's Winograd kernel for the 3x3
// convolutions it takes (on, the default; see Conv2d) and libtorch's
// convolution for all of them from then on, and returns the previous
// choice. libtorch's gives PyTorch's values to the last bit.
func SetWinogradConv(on bool) bool { return !winogradConvOff.Swap(!on) }

// SetPointwiseConv chooses between the shim's kernel for the 1x1
// convolutions it takes (on, the default; see Conv2d) and libtorch's
// convolution for all of them from then on, and returns the previous
// choice. libtorch's gives PyTorch's values to the last bit.
func SetPointwiseConv(on bool) bool { return !pointwiseConvOff.Swap(!on) }

// SetNarrowConv chooses between the shim's kernel for the 3x3
// convolutions into 1 to 8 channels it takes (on, the default; see Conv2d)
// and libtorch's convolution for all of them from then on, and returns the
// previous choice. libtorch's gives PyTorch's values to the last bit.
func SetNarrowConv(on bool) bool { return !narrowConvOff.Swap(!on) }

// SetIm2colConv chooses between the shim's kernel for the strided and
// few-channel 3x3 convolutions it takes (on, the default; see Conv2d) and
// libtorch's convolution for all of them from then on, and returns the
// previous choice. libtorch's gives PyTorch's values to the last bit.
func SetIm2colConv(on bool) bool { return !im2colConvOff.Swap(!on) }

// WinogradConvSupported says whether this build and CPU have the Winograd
// kernel, and the 1x1, narrow and im2col kernels with it (x86-64 with AVX-512, or
// AVX2 and FMA).
func WinogradConvSupported() bool { return vectorISA(-1) != C.DDPM_VECTORS_NONE }

// ConvKernelVectors names the vectors the shim's convolution kernels
// (Winograd, 1x1, narrow, im2col; see Conv2d) use on this CPU and build: "avx512",
// "avx2", or "" where they do not run and libtorch's convolutions do.
func ConvKernelVectors() string {
	switch vectorISA(-1) {
	case vectorsAVX512:
		return "avx512"
	case vectorsAVX2:
		return "avx2"
	}
	return ""
}

// vectorISA limits the vectors of the shim's hand-vectorised kernels (the
// Winograd, 1x1, narrow and im2col convolutions) to limit (one of the shim's
// DDPM_VECTORS_ values; -1 leaves them) and returns what they use then: the
// tests run the AVX2 kernels on an AVX-512 CPU this way, and restore the
// default, the widest, with vectorsAVX512.
func vectorISA(limit int) int { return int(C.ddpm_vector_isa(C.int32_t(limit))) }

const (
	vectorsAVX2   = C.DDPM_VECTORS_AVX2
	vectorsAVX512 = C.DDPM_VECTORS_AVX512
)

// GroupNorm normalises x (N, C, ...) over groups of channels, then applies
// the per-channel affine weight and bias (either may be nil).
func (s *Scope) GroupNorm(x *Tensor, groups int64, weight, bias *Tensor, eps float64) *Tensor {
	return s.groupNorm("group_norm", x, nil, groups, weight, bias, eps, false)
}

// GroupNormSiLU is SiLU(GroupNorm(x + shift)), shift (N, C) added to every
// value of its sample's channel (nil for none): the start of a residual
// block, where shift is the timestep embedding's projection. Without
// autograd on the CPU in float32 (and bf16 autocast) it runs as one kernel
// of the shim (see csrc/group_norm.cpp): 0.15-0.62 of the time of
// libtorch's three ops. GroupNorm runs the same kernel. Under bf16 autocast
// a bfloat16 x gives a bfloat16 result (the float32 one rounded, as autocast
// would round it for the convolution that follows), else float32.
func (s *Scope) GroupNormSiLU(x, shift *Tensor, groups int64, weight, bias *Tensor, eps float64) *Tensor {
	return s.groupNorm("group_norm_silu", x, shift, groups, weight, bias, eps, true)
}

// groupNormKernelOff says whether GroupNorm and GroupNormSiLU run
// libtorch's ops instead of the shim's kernel (SetGroupNormKernel).
var groupNormKernelOff atomic.Bool

// SetGroupNormKernel chooses between the shim's GroupNorm+SiLU kernel (on,
// the default) and libtorch's own GroupNorm, SiLU and add for every
// GroupNorm and GroupNormSiLU from then on, and returns the previous
// choice. libtorch's ops give the values of PyTorch's modules to the last
// bit, the kernel the same up to float32 rounding (sampled images differ
// from PyTorch's by about 3e-7 relative L2), several times faster.
func SetGroupNormKernel(on bool) bool { return !groupNormKernelOff.Swap(!on) }

func (s *Scope) groupNorm(op string, x, shift *Tensor, groups int64, weight, bias *Tensor, eps float64, silu bool) *Tensor {
	if !s.ready(op, x) || !s.readyOptional(op, shift, weight, bias) {
		return nil
	}
	var out C.ddpm_tensor
	e := C.ddpm_group_norm(s.mode, x.h, opt(shift), C.int64_t(groups), opt(weight), opt(bias), C.double(eps), cBool(silu), cBool(!groupNormKernelOff.Load()), &out)
	return s.wrap(op, e, out, x, shift, weight, bias)
}

// Softmax along dim.
func (s *Scope) Softmax(a *Tensor, dim int64) *Tensor {
	if !s.ready("softmax", a) {
		return nil
	}
	var out C.ddpm_tensor
	return s.wrap("softmax", C.ddpm_softmax(s.mode, a.h, C.int64_t(dim), &out), out, a)
}

// LogSoftmax along dim.
func (s *Scope) LogSoftmax(a *Tensor, dim int64) *Tensor {
	if !s.ready("log_softmax", a) {
		return nil
	}
	var out C.ddpm_tensor
	return s.wrap("log_softmax", C.ddpm_log_softmax(s.mode, a.h, C.int64_t(dim), &out), out, a)
}

// Attention is scaled dot-product attention softmax(q k^T * scale) v over
// inputs shaped (..., L, E); scale <= 0 means 1/sqrt(E). It runs libtorch's
// fused kernel where the libtorch has one (2.1 and later) and the plain
// composition otherwise.
func (s *Scope) Attention(q, k, v *Tensor, scale float64) *Tensor {
	out, _ := s.attention(q, k, v, scale, true)
	return out
}

// attention also reports whether the fused kernel ran.
func (s *Scope) attention(q, k, v *Tensor, scale float64, allowFused bool) (*Tensor, bool) {
	if !s.ready("attention", q, k, v) {
		return nil, false
	}
	var out C.ddpm_tensor
	var fused C.int32_t
	t := s.wrap("attention", C.ddpm_attention(s.mode, q.h, k.h, v.h, C.double(scale), cBool(allowFused), &out, &fused), out, q, k, v)
	return t, fused != 0
}

// UpsampleNearest2d resizes x (N, C, H, W) to (N, C, outH, outW) by repeating
// pixels.
func (s *Scope) UpsampleNearest2d(x *Tensor, outH, outW int64) *Tensor {
	if !s.ready("upsample_nearest2d", x) {
		return nil
	}
	var out C.ddpm_tensor
	return s.wrap("upsample_nearest2d", C.ddpm_upsample_nearest2d(s.mode, x.h, C.int64_t(outH), C.int64_t(outW), &out), out, x)
}

// AvgPool2d averages kernel x kernel windows moved by stride.
func (s *Scope) AvgPool2d(x *Tensor, kernel, stride int64) *Tensor {
	if !s.ready("avg_pool2d", x) {
		return nil
	}
	var out C.ddpm_tensor
	return s.wrap("avg_pool2d", C.ddpm_avg_pool2d(s.mode, x.h, C.int64_t(kernel), C.int64_t(stride), &out), out, x)
}

// Reduction says how a loss combines its per-element terms.
type Reduction int32

// Loss reductions.
const (
	ReduceMean Reduction = C.DDPM_REDUCE_MEAN
	ReduceSum  Reduction = C.DDPM_REDUCE_SUM
	ReduceNone Reduction = C.DDPM_REDUCE_NONE
)

// MSELoss is the squared error between a and b (same shapes).
func (s *Scope) MSELoss(a, b *Tensor, r Reduction) *Tensor {
	if !s.ready("mse_loss", a, b) {
		return nil
	}
	var out C.ddpm_tensor
	return s.wrap("mse_loss", C.ddpm_mse_loss(s.mode, a.h, b.h, C.int32_t(r), &out), out, a, b)
}

// CrossEntropy is the cross entropy of logits (N, C) against int64 labels (N).
func (s *Scope) CrossEntropy(logits, labels *Tensor, r Reduction) *Tensor {
	if !s.ready("cross_entropy", logits, labels) {
		return nil
	}
	var out C.ddpm_tensor
	return s.wrap("cross_entropy", C.ddpm_cross_entropy(s.mode, logits.h, labels.h, C.int32_t(r), &out), out, logits, labels)
}
