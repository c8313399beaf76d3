package nn

import (
	"fmt"

	"github.com/ddpm-go/ddpm/torch"
)

// DefaultGroupNormEps is the epsilon of GroupNorm unless Eps says otherwise:
// PyTorch's nn.GroupNorm default (the original DDPM TensorFlow code used
// 1e-6).
const DefaultGroupNormEps = 1e-5

// Option adjusts how a layer is created. Options a layer has no use for are
// ignored.
type Option func(*layerOptions)

type layerOptions struct {
	zero    bool
	noBias  bool
	stride  int64
	padding int64
	eps     float64
}

func collect(opts []Option) layerOptions {
	o := layerOptions{stride: 1, eps: DefaultGroupNormEps}
	for _, f := range opts {
		f(&o)
	}
	return o
}

// ZeroInit initialises every parameter of the layer to zero instead of the
// PyTorch default. Diffusion U-Nets zero the last layer of each residual
// branch and the output layer, so that each block starts as the identity.
func ZeroInit() Option { return func(o *layerOptions) { o.zero = true } }

// NoBias leaves out the bias of a Linear or Conv2d.
func NoBias() Option { return func(o *layerOptions) { o.noBias = true } }

// Stride sets a Conv2d's stride (default 1) in both directions.
func Stride(n int64) Option { return func(o *layerOptions) { o.stride = n } }

// Padding sets a Conv2d's zero padding (default 0) on every side.
func Padding(n int64) Option { return func(o *layerOptions) { o.padding = n } }

// Eps sets a GroupNorm's epsilon (default DefaultGroupNormEps).
func Eps(eps float64) Option { return func(o *layerOptions) { o.eps = eps } }

// weightAndBias creates "weight" and, unless noBias, "bias" with PyTorch's
// default initialisation U(-1/sqrt(fanIn), 1/sqrt(fanIn)) for both, or zeros.
func (b *Builder) weightAndBias(o layerOptions, wShape []int64, out, fanIn int64) (w, bias *torch.Tensor) {
	bound := KaimingUniformBound(fanIn)
	if o.zero {
		w = b.Constant("weight", wShape, 0)
	} else {
		w = b.Uniform("weight", wShape, bound)
	}
	if o.noBias {
		return w, nil
	}
	if o.zero {
		bias = b.Constant("bias", []int64{out}, 0)
	} else {
		bias = b.Uniform("bias", []int64{out}, bound)
	}
	return w, bias
}

// layerParams lists a layer's "weight" and "bias" (when not nil) under
// their full names.
func (b *Builder) layerParams(w, bias *torch.Tensor) []Param {
	var ps []Param
	if w != nil {
		ps = append(ps, Param{Name: b.Name("weight"), T: w})
	}
	if bias != nil {
		ps = append(ps, Param{Name: b.Name("bias"), T: bias})
	}
	return ps
}

// Linear is y = x W^T + b, PyTorch's nn.Linear: weight (Out, In), bias (Out).
type Linear struct {
	In, Out      int64
	Weight, Bias *torch.Tensor // Bias is nil with NoBias
	params       []Param
}

// Linear creates a Linear layer's "weight" and "bias" under b.
func (b *Builder) Linear(in, out int64, opts ...Option) *Linear {
	o := collect(opts)
	if in <= 0 || out <= 0 {
		b.fail(fmt.Errorf("nn: %s: Linear(%d, %d) needs positive sizes", b.prefix, in, out))
	}
	w, bias := b.weightAndBias(o, []int64{out, in}, out, in)
	return &Linear{In: in, Out: out, Weight: w, Bias: bias, params: b.layerParams(w, bias)}
}

// Forward maps x (..., In) to (..., Out).
func (l *Linear) Forward(s *torch.Scope, x *torch.Tensor) *torch.Tensor {
	return s.Linear(x, l.Weight, l.Bias)
}

// Params are the layer's weight and bias.
func (l *Linear) Params() []Param { return l.params }

// Conv2d is PyTorch's nn.Conv2d with square kernels and one group: weight
// (Out, In, K, K), bias (Out).
//
// On the CPU a Conv2d built for Inference runs channels-last (NHWC), like a
// PyTorch module after model.to(memory_format=torch.channels_last): its
// weight is stored that way and its output is made so, even where libtorch
// would not (an input of one channel, such as a grayscale image, is as much
// NCHW as NHWC to it, so the first convolution of a network would otherwise
// hand NCHW maps to every layer after it). oneDNN then convolves the maps as
// they are laid out; in NCHW it reorders every input to its blocked layout
// and every output back, which took about a quarter of its time in the small
// U-Net. Measured on that model against NCHW (medians of seven to ten, one
// and two threads): a forward 12-14% faster at batch 1 and 2-15% at batch 8
// and 16, 9-26% in bf16. A Conv2d built for Training stays NCHW:
// channels-last's training step took 1.00-1.04 of NCHW's time for the small
// preset at batch 64 (both precisions), 0.92-1.10 at batch 8 and 16,
// 1.05-1.11 for the cifar10 preset at batch 8 and 1.04-1.19 for the
// autoencoder of `ddpm train-autoencoder`, because libtorch 1.13's
// GroupNorm forward and backward on channels-last maps take 1.5-4.4 times
// as long as on NCHW ones. Values are the same up to float rounding
// either way. BenchmarkChannelsLast in package unet measures both uses
// again; ChannelsLastEnv overrides the choice. On CUDA the layout is left
// as it is (not measured there yet). Channels-last float32 maps are also
// what the shim's Winograd kernel for 3x3 convolutions takes (see
// torch.Scope.Conv2d), in sampling on a CPU with AVX-512 or AVX2.
type Conv2d struct {
	In, Out, Kernel, Stride, Padding int64
	Weight, Bias                     *torch.Tensor // Bias is nil with NoBias
	params                           []Param
	channelsLast                     bool
}

// Conv2d creates a convolution's "weight" and "bias" under b. Stride and
// Padding set its geometry.
func (b *Builder) Conv2d(in, out, kernel int64, opts ...Option) *Conv2d {
	o := collect(opts)
	if in <= 0 || out <= 0 || kernel <= 0 || o.stride <= 0 || o.padding < 0 {
		b.fail(fmt.Errorf("nn: %s: Conv2d(%d, %d, kernel %d, stride %d, padding %d) has a bad size",
			b.prefix, in, out, kernel, o.stride, o.padding))
	}
	w, bias := b.weightAndBias(o, []int64{out, in, kernel, kernel}, out, in*kernel*kernel)
	return &Conv2d{
		In: in, Out: out, Kernel: kernel, Stride: o.stride, Padding: o.padding,
		Weight: w, Bias: bias, params: b.layerParams(w, bias),
		channelsLast: b.st.channelsLast,
	}
}

// Forward convolves x (N, In, H, W).
func (c *Conv2d) Forward(s *torch.Scope, x *torch.Tensor) *torch.Tensor {
	return c.forward(s, x, torch.Conv2dOptions{})
}

// ForwardAdd convolves x (N, In, H, W) and adds residual (nil for none),
// the output's shape: a residual connection, added in the convolution's
// last pass where the shim's kernels run it (torch.Conv2dOptions.Residual).
func (c *Conv2d) ForwardAdd(s *torch.Scope, x, residual *torch.Tensor) *torch.Tensor {
	return c.forward(s, x, torch.Conv2dOptions{Residual: residual})
}

// ForwardUpsample convolves x (N, In, H, W) upsampled by factor (nearest
// neighbour, to factor H x factor W), a map the shim's Winograd kernel
// reads from x without making it (torch.Conv2dOptions.Upsample).
func (c *Conv2d) ForwardUpsample(s *torch.Scope, x *torch.Tensor, factor int64) *torch.Tensor {
	return c.forward(s, x, torch.Conv2dOptions{Upsample: factor})
}

// forward convolves x with c's geometry and o's upsampling and residual.
func (c *Conv2d) forward(s *torch.Scope, x *torch.Tensor, o torch.Conv2dOptions) *torch.Tensor {
	o.Stride = [2]int64{c.Stride, c.Stride}
	o.Padding = [2]int64{c.Padding, c.Padding}
	y := s.Conv2d(x, c.Weight, c.Bias, o)
	if !c.channelsLast {
		return y
	}
	nhwc := s.ChannelsLast(y) // y itself when libtorch made it NHWC already
	y.Close()                 // so that a copy does not keep the original alive
	return nhwc
}

// OutSize is the output height (or width) for an input of size n.
func (c *Conv2d) OutSize(n int64) int64 { return (n+2*c.Padding-c.Kernel)/c.Stride + 1 }

// Params are the layer's weight and bias.
func (c *Conv2d) Params() []Param { return c.params }

// GroupNorm is PyTorch's nn.GroupNorm with an affine transform: weight
// (Channels) starting at 1, bias (Channels) starting at 0.
type GroupNorm struct {
	Groups, Channels int64
	Eps              float64
	Weight, Bias     *torch.Tensor
	params           []Param
}

// GroupNorm creates a group normalisation's "weight" and "bias" under b.
// channels must be a multiple of groups. ZeroInit zeroes the weight too.
func (b *Builder) GroupNorm(groups, channels int64, opts ...Option) *GroupNorm {
	o := collect(opts)
	if groups <= 0 || channels <= 0 || channels%groups != 0 {
		b.fail(fmt.Errorf("nn: %s: GroupNorm needs channels (%d) to be a positive multiple of groups (%d)",
			b.prefix, channels, groups))
	}
	scale := 1.0
	if o.zero {
		scale = 0
	}
	w := b.Constant("weight", []int64{channels}, scale)
	bias := b.Constant("bias", []int64{channels}, 0)
	return &GroupNorm{
		Groups: groups, Channels: channels, Eps: o.eps,
		Weight: w, Bias: bias, params: b.layerParams(w, bias),
	}
}

// Forward normalises x (N, Channels, ...).
func (g *GroupNorm) Forward(s *torch.Scope, x *torch.Tensor) *torch.Tensor {
	return s.GroupNorm(x, g.Groups, g.Weight, g.Bias, g.Eps)
}

// ForwardSiLU is SiLU(Forward(x + shift)), shift (N, Channels) added to
// each channel first (nil for none), in one op (torch.Scope.GroupNormSiLU).
func (g *GroupNorm) ForwardSiLU(s *torch.Scope, x, shift *torch.Tensor) *torch.Tensor {
	return s.GroupNormSiLU(x, shift, g.Groups, g.Weight, g.Bias, g.Eps)
}

// Params are the layer's weight and bias.
func (g *GroupNorm) Params() []Param { return g.params }

// Embedding is PyTorch's nn.Embedding: a table weight (Num, Dim) whose rows
// start as N(0, 1) draws.
type Embedding struct {
	Num, Dim int64
	Weight   *torch.Tensor
	params   []Param
}

// Embedding creates a lookup table's "weight" under b. ZeroInit zeroes it.
func (b *Builder) Embedding(num, dim int64, opts ...Option) *Embedding {
	o := collect(opts)
	if num <= 0 || dim <= 0 {
		b.fail(fmt.Errorf("nn: %s: Embedding(%d, %d) needs positive sizes", b.prefix, num, dim))
	}
	var w *torch.Tensor
	if o.zero {
		w = b.Constant("weight", []int64{num, dim}, 0)
	} else {
		w = b.Normal("weight", []int64{num, dim}, 1)
	}
	return &Embedding{Num: num, Dim: dim, Weight: w, params: b.layerParams(w, nil)}
}

// Forward looks up the int64 indices idx (any shape) and returns their rows,
// shaped (idx shape..., Dim).
func (e *Embedding) Forward(s *torch.Scope, idx *torch.Tensor) *torch.Tensor {
	if s.Err() != nil {
		return nil
	}
	shape := idx.Shape()
	if len(shape) == 1 {
		return s.IndexSelect(e.Weight, 0, idx)
	}
	rows := s.IndexSelect(e.Weight, 0, s.Reshape(idx, -1))
	return s.Reshape(rows, append(shape, e.Dim)...)
}

// Params are the layer's table.
func (e *Embedding) Params() []Param { return e.params }

// fail records err unless an error is already recorded.
func (b *Builder) fail(err error) {
	if b.st.err == nil {
		b.st.err = err
	}
}
