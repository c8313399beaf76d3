package unet

import (
	"math"

	"github.com/ddpm-go/ddpm/diffusion/nn"
	"github.com/ddpm-go/ddpm/torch"
)

// dropout is the dropout state of one forward pass.
type dropout struct {
	p     float64
	train bool
	gen   *torch.Generator
}

func (d dropout) apply(s *torch.Scope, x *torch.Tensor) *torch.Tensor {
	if !d.train || d.p == 0 {
		return x
	}
	return s.Dropout(x, d.p, true, d.gen)
}

// resBlock is the DDPM residual block:
//
//	h = conv1(SiLU(norm1(x))) + temb_proj(SiLU(emb))
//	h = conv2(dropout(SiLU(norm2(h))))
//	out = shortcut(x) + h
//
// where the shortcut is a 1x1 conv ("nin_shortcut") when the channel count
// changes and the identity otherwise. conv2 starts at zero, so the block
// starts as its shortcut.
type resBlock struct {
	norm1    *nn.GroupNorm
	conv1    *nn.Conv2d
	tembProj *nn.Linear
	norm2    *nn.GroupNorm
	conv2    *nn.Conv2d
	shortcut *nn.Conv2d // nil when in == out
}

func newResBlock(b *nn.Builder, r resSpec, c Config) *resBlock {
	g, eps := int64(c.NormGroups), nn.Eps(c.NormEps)
	blk := &resBlock{
		norm1:    b.Sub("norm1").GroupNorm(g, r.in, eps),
		conv1:    b.Sub("conv1").Conv2d(r.in, r.out, 3, nn.Padding(1)),
		tembProj: b.Sub("temb_proj").Linear(int64(c.TimeEmbedDim), r.out),
		norm2:    b.Sub("norm2").GroupNorm(g, r.out, eps),
		conv2:    b.Sub("conv2").Conv2d(r.out, r.out, 3, nn.Padding(1), nn.ZeroInit()),
	}
	if r.in != r.out {
		blk.shortcut = b.Sub("nin_shortcut").Conv2d(r.in, r.out, 1)
	}
	return blk
}

// forward maps x (N, in, H, W) to (N, out, H, W); embAct is SiLU of the
// timestep (and label) embedding, (N, TimeEmbedDim). A non-nil skip is
// concatenated to x along the channels first (the way up of the U).
func (r *resBlock) forward(s *torch.Scope, x, skip, embAct *torch.Tensor, d dropout) *torch.Tensor {
	return s.Block(func(s *torch.Scope) *torch.Tensor {
		if skip != nil {
			x = s.Cat([]*torch.Tensor{x, skip}, 1)
		}
		h := r.conv1.Forward(s, r.norm1.ForwardSiLU(s, x, nil))
		// norm2 takes h + temb_proj(emb), (N, out) added over H and W, without
		// the sum ever being stored.
		proj := r.tembProj.Forward(s, embAct)
		h = d.apply(s, r.norm2.ForwardSiLU(s, h, proj))
		if r.shortcut == nil {
			return r.conv2.ForwardAdd(s, h, x) // x + conv2(h); conv2 is zero at init
		}
		return r.shortcut.ForwardAdd(s, x, r.conv2.Forward(s, h))
	})
}

// attnBlock is multi-head self-attention over the pixels of a feature map,
// with a residual connection:
//
//	q, k, v = 1x1 convs of norm(x), split by channel into heads
//	out = x + proj_out(softmax(q k^T / sqrt(d)) v)
//
// where d is the channels per head. proj_out starts at zero.
type attnBlock struct {
	norm          *nn.GroupNorm
	q, k, v, proj *nn.Conv2d
	heads         int64
}

func newAttnBlock(b *nn.Builder, ch int64, c Config) *attnBlock {
	return &attnBlock{
		norm:  b.Sub("norm").GroupNorm(int64(c.NormGroups), ch, nn.Eps(c.NormEps)),
		q:     b.Sub("q").Conv2d(ch, ch, 1),
		k:     b.Sub("k").Conv2d(ch, ch, 1),
		v:     b.Sub("v").Conv2d(ch, ch, 1),
		proj:  b.Sub("proj_out").Conv2d(ch, ch, 1, nn.ZeroInit()),
		heads: c.heads(ch),
	}
}

// forward maps x (n, ch, h, w) to the same shape.
func (a *attnBlock) forward(s *torch.Scope, x *torch.Tensor, n, ch, h, w int64) *torch.Tensor {
	return s.Block(func(s *torch.Scope) *torch.Tensor {
		hd := ch / a.heads
		hn := a.norm.Forward(s, x)
		// (n, ch, h, w) -> (n, heads, hw, hd): head i holds channels
		// [i*hd, (i+1)*hd).
		split := func(t *torch.Tensor) *torch.Tensor {
			return s.Transpose(s.Reshape(t, n, a.heads, hd, h*w), 2, 3)
		}
		q := split(a.q.Forward(s, hn))
		k := split(a.k.Forward(s, hn))
		v := split(a.v.Forward(s, hn))
		o := s.Attention(q, k, v, 1/math.Sqrt(float64(hd))) // (n, heads, hw, hd)
		o = s.Reshape(s.Transpose(o, 2, 3), n, ch, h, w)
		return a.proj.ForwardAdd(s, o, x) // x + proj_out(o)
	})
}

// timestepEmbedding is the sinusoidal embedding of the timesteps t (N) as
// (N, dim) float32. By default it follows improved-diffusion (and
// diffusers' defaults):
//
//	freq_i = exp(-ln(10000) * i / (half - shift)), i = 0 .. half-1, half = dim/2
//	emb = [cos(t * freq), sin(t * freq)]
//
// with shift 0. The original DDPM put sin first (sinFirst) and used shift 1:
// weights trained with one convention do not fit the other. The embedding
// is computed in float32 with the same operations as the PyTorch code, so
// the two agree bit for bit.
func timestepEmbedding(s *torch.Scope, t *torch.Tensor, dim int64, sinFirst bool, shift float64, dev torch.Device) *torch.Tensor {
	const maxPeriod = 10000
	half := dim / 2
	freqs := s.Exp(s.DivScalar(s.MulScalar(s.Arange(half, torch.Float32, dev), -math.Log(maxPeriod)), float64(half)-shift))
	args := s.Mul(s.Unsqueeze(s.ToDType(t, torch.Float32), 1), s.Unsqueeze(freqs, 0))
	if sinFirst {
		return s.Cat([]*torch.Tensor{s.Sin(args), s.Cos(args)}, 1)
	}
	return s.Cat([]*torch.Tensor{s.Cos(args), s.Sin(args)}, 1)
}
