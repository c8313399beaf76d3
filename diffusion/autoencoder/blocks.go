package autoencoder

import (
	"math"
	"strconv"

	"github.com/ddpm-go/ddpm/diffusion/nn"
	"github.com/ddpm-go/ddpm/torch"
)

// normEps is the GroupNorm epsilon of every norm of diffusers' Encoder and
// Decoder (resnet_eps and conv_norm_out).
const normEps = 1e-6

// resnet is diffusers' ResnetBlock2D without a timestep embedding
// (temb_channels None), dropout 0 and output scale 1:
//
//	h   = conv2(SiLU(norm2(conv1(SiLU(norm1(x))))))
//	out = shortcut(x) + h
//
// The shortcut is a 1x1 convolution (conv_shortcut) when the channel count
// changes, the identity otherwise.
type resnet struct {
	norm1, norm2 *nn.GroupNorm
	conv1, conv2 *nn.Conv2d
	shortcut     *nn.Conv2d // nil when in == out
}

func newResnet(b *nn.Builder, in, out int64, groups int64) *resnet {
	r := &resnet{
		norm1: b.Sub("norm1").GroupNorm(groups, in, nn.Eps(normEps)),
		conv1: b.Sub("conv1").Conv2d(in, out, 3, nn.Padding(1)),
		norm2: b.Sub("norm2").GroupNorm(groups, out, nn.Eps(normEps)),
		conv2: b.Sub("conv2").Conv2d(out, out, 3, nn.Padding(1)),
	}
	if in != out {
		r.shortcut = b.Sub("conv_shortcut").Conv2d(in, out, 1)
	}
	return r
}

func (r *resnet) forward(s *torch.Scope, x *torch.Tensor) *torch.Tensor {
	return s.Block(func(s *torch.Scope) *torch.Tensor {
		h := r.norm2.ForwardSiLU(s, r.conv1.Forward(s, r.norm1.ForwardSiLU(s, x, nil)), nil)
		if r.shortcut == nil {
			return r.conv2.ForwardAdd(s, h, x) // x + conv2(h)
		}
		return r.shortcut.ForwardAdd(s, x, r.conv2.Forward(s, h))
	})
}

// attention is the single-head self-attention over the pixels of a
// feature map in diffusers' UNetMidBlock2D (attention_head_dim = the
// channels), with a residual connection:
//
//	h       = group_norm(x) as (N, HW, C)
//	q, k, v = to_q(h), to_k(h), to_v(h)          (Linear layers)
//	out     = x + to_out.0(softmax(q k^T / sqrt(C)) v)
type attention struct {
	norm           *nn.GroupNorm
	q, k, v, toOut *nn.Linear
}

func newAttention(b *nn.Builder, ch, groups int64) *attention {
	return &attention{
		norm:  b.Sub("group_norm").GroupNorm(groups, ch, nn.Eps(normEps)),
		q:     b.Sub("to_q").Linear(ch, ch),
		k:     b.Sub("to_k").Linear(ch, ch),
		v:     b.Sub("to_v").Linear(ch, ch),
		toOut: b.Sub("to_out").Sub("0").Linear(ch, ch),
	}
}

func (a *attention) forward(s *torch.Scope, x *torch.Tensor) *torch.Tensor {
	return s.Block(func(s *torch.Scope) *torch.Tensor {
		shape := x.Shape()
		n, c, h, w := shape[0], shape[1], shape[2], shape[3]
		hn := s.Transpose(s.Reshape(a.norm.Forward(s, x), n, c, h*w), 1, 2) // (N, HW, C)
		o := s.Attention(a.q.Forward(s, hn), a.k.Forward(s, hn), a.v.Forward(s, hn), 1/math.Sqrt(float64(c)))
		o = a.toOut.Forward(s, o)
		return s.Add(x, s.Reshape(s.Transpose(o, 1, 2), n, c, h, w))
	})
}

// midBlock is diffusers' UNetMidBlock2D without a timestep embedding:
// resnets.0, attentions.0 (unless attention is off), resnets.1.
type midBlock struct {
	res0, res1 *resnet
	attn       *attention // nil without mid-block attention
}

func newMidBlock(b *nn.Builder, ch, groups int64, addAttention bool) *midBlock {
	m := &midBlock{res0: newResnet(b.Sub("resnets").Sub("0"), ch, ch, groups)}
	if addAttention {
		m.attn = newAttention(b.Sub("attentions").Sub("0"), ch, groups)
	}
	m.res1 = newResnet(b.Sub("resnets").Sub("1"), ch, ch, groups)
	return m
}

func (m *midBlock) forward(s *torch.Scope, x *torch.Tensor) *torch.Tensor {
	h := m.res0.forward(s, x)
	if m.attn != nil {
		h = replace(h, m.attn.forward(s, h))
	}
	return replace(h, m.res1.forward(s, h))
}

// level is one DownEncoderBlock2D or UpDecoderBlock2D: its residual blocks
// ("resnets.j"), then a resampling convolution ("downsamplers.0.conv" or
// "upsamplers.0.conv"), absent at the last level.
type level struct {
	resnets []*resnet
	sampler *nn.Conv2d
}

// newLevel creates the resnets of a level going from in to out channels
// (the first one changes the width) and, with resample, its resampling
// convolution under samplerName: a stride-2 3x3 convolution without
// padding going down (forward pads the bottom and right), a 3x3 one with
// padding 1 going up.
func newLevel(b *nn.Builder, in, out int64, layers int, groups int64, samplerName string, resample bool) level {
	var l level
	for j := range layers {
		l.resnets = append(l.resnets, newResnet(b.Sub("resnets").Sub(strconv.Itoa(j)), in, out, groups))
		in = out
	}
	if resample {
		sb := b.Sub(samplerName).Sub("0").Sub("conv")
		if samplerName == "downsamplers" {
			l.sampler = sb.Conv2d(out, out, 3, nn.Stride(2))
		} else {
			l.sampler = sb.Conv2d(out, out, 3, nn.Padding(1))
		}
	}
	return l
}

// down runs an encoder level on h, which it frees: its resnets, then diffusers' Downsample2D
// with padding 0, which pads one row and one column of zeros at the bottom
// and right (F.pad (0, 1, 0, 1)) before its stride-2 convolution.
func (l level) down(s *torch.Scope, h *torch.Tensor) *torch.Tensor {
	for _, r := range l.resnets {
		h = replace(h, r.forward(s, h))
	}
	if l.sampler == nil {
		return h
	}
	return replace(h, s.Block(func(s *torch.Scope) *torch.Tensor {
		shape := h.Shape()
		n, c, ht, w := shape[0], shape[1], shape[2], shape[3]
		dt, dev := h.DType(), h.Device()
		p := s.Cat([]*torch.Tensor{h, s.Zeros([]int64{n, c, ht, 1}, dt, dev)}, 3)
		p = s.Cat([]*torch.Tensor{p, s.Zeros([]int64{n, c, 1, w + 1}, dt, dev)}, 2)
		return l.sampler.Forward(s, p)
	}))
}

// up runs a decoder level on h, which it frees: its resnets, then diffusers' Upsample2D:
// nearest-neighbour x2, then a 3x3 convolution.
func (l level) up(s *torch.Scope, h *torch.Tensor) *torch.Tensor {
	for _, r := range l.resnets {
		h = replace(h, r.forward(s, h))
	}
	if l.sampler == nil {
		return h
	}
	return replace(h, l.sampler.ForwardUpsample(s, h, 2))
}

// replace frees old, an intermediate result that next was computed from,
// and returns next. The model's inputs are never passed as old: level.down
// and level.up consume (free) the h they are given, which is always an
// intermediate of the pass.
func replace(old, next *torch.Tensor) *torch.Tensor {
	old.Close()
	return next
}
