// Package unet is the U-Net of DDPM (Ho et al. 2020, "Denoising Diffusion
// Probabilistic Models", appendix B), the noise-prediction network of the
// paper's CIFAR-10 model, generalised by a Config: channel widths per level,
// residual blocks per level, attention resolutions and heads, dropout, and
// optional class conditioning for classifier-free guidance.
//
// The network, for levels i = 0 .. L-1 of resolution ImageSize/2^i:
//
//	emb  = Linear(SiLU(Linear(sinusoidal(t))))   (+ label embedding)
//	h    = conv_in(x)
//	down: per level NumResBlocks residual blocks (each followed by
//	      attention at the attention resolutions), then a stride-2 conv
//	      (all levels but the last); every output is kept as a skip
//	mid:  residual block, attention, residual block
//	up:   per level NumResBlocks+1 residual blocks, each fed
//	      concat(h, skip), each followed by attention at the attention
//	      resolutions, then nearest x2 upsampling and a conv (all levels
//	      but the first)
//	out  = conv_out(SiLU(GroupNorm(h)))
//
// Parameter names follow the PyTorch ports of the original DDPM code (as in
// DDIM's): "temb.dense.0.weight", "down.0.block.1.conv1.weight",
// "mid.attn_1.q.weight", "up.3.upsample.conv.weight" and so on, so their
// tensors map one to one. Differences from the TensorFlow original, none of
// which changes the parameter count (35,746,307 for the CIFAR-10 preset):
// PyTorch's default initialisation, with the last conv of every
// residual block, the attention output projection and conv_out initialised
// to zero (the original scaled them by 1e-10); GroupNorm epsilon 1e-5
// (PyTorch's default; the original used 1e-6); symmetric padding 1 for the
// stride-2 downsampling conv (the original padded only bottom and right);
// and the improved-diffusion timestep embedding (see timestepEmbedding).
package unet

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/ddpm-go/ddpm/diffusion/nn"
	"github.com/ddpm-go/ddpm/torch"
)

// UNet is a DDPM U-Net. It implements diffusion.Model. It starts in
// evaluation mode (no dropout); see SetTraining.
type UNet struct {
	cfg    Config
	dev    torch.Device
	dtype  torch.DType
	params []nn.Param

	tembDense0, tembDense1 *nn.Linear
	labelEmb               *nn.Embedding // nil for an unconditional model
	convIn                 *nn.Conv2d
	down                   []downLevel
	mid1                   *resBlock
	midAttn                *attnBlock
	mid2                   *resBlock
	up                     []upLevel // deepest level first
	normOut                *nn.GroupNorm
	convOut                *nn.Conv2d

	train bool
	gen   *torch.Generator
}

type downLevel struct {
	blocks     []*resBlock
	attn       []*attnBlock // per block; nil where none
	downsample *nn.Conv2d   // nil at the last level
}

type upLevel struct {
	level    int // index into Config.ChannelMult
	blocks   []*resBlock
	attn     []*attnBlock
	upsample *nn.Conv2d // nil at level 0
}

// New builds the U-Net of cfg (defaults applied) for sampling and
// evaluation, with parameters of dtype dt on dev, initialised from gen
// (which must draw for dev; nil means libtorch's global generator). Close
// frees its parameters.
func New(cfg Config, dev torch.Device, dt torch.DType, gen *torch.Generator) (*UNet, error) {
	return build(cfg, dev, dt, gen, nn.Inference)
}

// NewForTraining is New for a model to train: the same parameters from the
// same gen, in the memory layout whose training step is fastest (NCHW on the
// CPU; see nn.Use). Either model samples and trains correctly.
func NewForTraining(cfg Config, dev torch.Device, dt torch.DType, gen *torch.Generator) (*UNet, error) {
	return build(cfg, dev, dt, gen, nn.Training)
}

func build(cfg Config, dev torch.Device, dt torch.DType, gen *torch.Generator, use nn.Use) (*UNet, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if !dt.IsFloat() {
		return nil, fmt.Errorf("unet: parameters must have a floating-point dtype, not %s", dt)
	}
	b := nn.NewBuilder(dev, dt, gen, use)
	u := &UNet{cfg: cfg, dev: dev, dtype: dt}
	base, temb := int64(cfg.BaseChannels), int64(cfg.TimeEmbedDim)
	l := cfg.layout()

	dense := b.Sub("temb").Sub("dense")
	u.tembDense0 = dense.Sub("0").Linear(base, temb)
	u.tembDense1 = dense.Sub("1").Linear(temb, temb)
	if cfg.NumClasses > 0 {
		u.labelEmb = b.Sub("label_emb").Embedding(int64(cfg.LabelRows()), temb)
	}
	u.convIn = b.Sub("conv_in").Conv2d(int64(cfg.InChannels), base, 3, nn.Padding(1))

	for i, lv := range l.levels {
		lb := b.Sub("down").Sub(strconv.Itoa(i))
		var d downLevel
		d.blocks, d.attn = newBlocks(lb, lv.down, cfg)
		if lv.downsample {
			ch := lv.down[len(lv.down)-1].out
			pad := int64(1)
			if cfg.AsymmetricDownsample {
				pad = 0 // Forward pads bottom and right by 1
			}
			d.downsample = lb.Sub("downsample").Sub("conv").Conv2d(ch, ch, 3, nn.Stride(2), nn.Padding(pad))
		}
		u.down = append(u.down, d)
	}

	mb := b.Sub("mid")
	mid := resSpec{in: l.midCh, out: l.midCh}
	u.mid1 = newResBlock(mb.Sub("block_1"), mid, cfg)
	u.midAttn = newAttnBlock(mb.Sub("attn_1"), l.midCh, cfg)
	u.mid2 = newResBlock(mb.Sub("block_2"), mid, cfg)

	for i := len(l.levels) - 1; i >= 0; i-- {
		lv := l.levels[i]
		lb := b.Sub("up").Sub(strconv.Itoa(i))
		up := upLevel{level: i}
		up.blocks, up.attn = newBlocks(lb, lv.up, cfg)
		if lv.upsample {
			ch := lv.up[len(lv.up)-1].out
			up.upsample = lb.Sub("upsample").Sub("conv").Conv2d(ch, ch, 3, nn.Padding(1))
		}
		u.up = append(u.up, up)
	}

	u.normOut = b.Sub("norm_out").GroupNorm(int64(cfg.NormGroups), base, nn.Eps(cfg.NormEps))
	u.convOut = b.Sub("conv_out").Conv2d(base, int64(cfg.OutChannels), 3, nn.Padding(1), nn.ZeroInit())

	if err := b.Err(); err != nil {
		nn.CloseParams(b.Params())
		return nil, fmt.Errorf("unet: build: %w", err)
	}
	u.params = b.Params()
	return u, nil
}

// newBlocks creates the residual blocks of a level ("block.j") and the
// attention blocks after them ("attn.j").
func newBlocks(b *nn.Builder, specs []resSpec, cfg Config) ([]*resBlock, []*attnBlock) {
	blocks := make([]*resBlock, len(specs))
	attn := make([]*attnBlock, len(specs))
	for j, r := range specs {
		blocks[j] = newResBlock(b.Sub("block").Sub(strconv.Itoa(j)), r, cfg)
		if r.attn {
			attn[j] = newAttnBlock(b.Sub("attn").Sub(strconv.Itoa(j)), r.out, cfg)
		}
	}
	return blocks, attn
}

// Config is the model's configuration, defaults applied.
func (u *UNet) Config() Config { return u.cfg.clone() }

// Device is where the parameters live.
func (u *UNet) Device() torch.Device { return u.dev }

// DType is the parameters' element type; Forward wants x in it.
func (u *UNet) DType() torch.DType { return u.dtype }

// Params are the model's parameters in creation order, named as in the
// PyTorch state_dict.
func (u *UNet) Params() []nn.Param { return append([]nn.Param(nil), u.params...) }

// Close frees the parameters. Safe to call more than once.
func (u *UNet) Close() { nn.CloseParams(u.params) }

// SetTraining switches dropout on (train true, drawing its masks from gen,
// which must draw for the model's device; nil means libtorch's global
// generator) or off. It must not be called while a Forward is running.
func (u *UNet) SetTraining(train bool, gen *torch.Generator) {
	u.train, u.gen = train, gen
}

// Training reports whether dropout is on.
func (u *UNet) Training() bool { return u.train }

// FLOPs is the cost of one forward pass per image (see Config.FLOPs).
func (u *UNet) FLOPs() int64 { return u.cfg.FLOPs() }

// Forward predicts the noise (or whatever target the model was trained on)
// for images x (N, InChannels, H, W) in the model's dtype, at int64
// timesteps t (N). H and W must be divisible by 2^(len(ChannelMult)-1);
// attention runs at the levels whose ImageSize-based resolution is listed
// in AttentionResolutions. labels (int64, N) are class labels in
// [0, NumClasses] for a class-conditional model, NumClasses being the null
// label; nil means the null label for every image. An unconditional model
// takes nil labels. The result is in the model's dtype, in an autocast
// scope too (see torch.NewAutocastScope). The result belongs to s; the intermediates are freed
// as soon as they have been used (autograd keeps what backward needs).
// Failures are recorded in s.
func (u *UNet) Forward(s *torch.Scope, x, t, labels *torch.Tensor) *torch.Tensor {
	if s.Err() != nil {
		return nil
	}
	n, height, width, err := u.checkInputs(x, t, labels)
	if err != nil {
		s.Fail(err)
		return nil
	}
	d := dropout{p: u.cfg.Dropout, train: u.train, gen: u.gen}

	// SiLU of the timestep (and label) embedding: every temb_proj takes it.
	embAct := s.Block(func(s *torch.Scope) *torch.Tensor {
		emb := timestepEmbedding(s, t, int64(u.cfg.BaseChannels), u.cfg.SinFirst, u.cfg.FreqShift, u.dev)
		if u.dtype != torch.Float32 {
			emb = s.ToDType(emb, u.dtype)
		}
		emb = u.tembDense1.Forward(s, s.SiLU(u.tembDense0.Forward(s, emb)))
		if u.labelEmb != nil {
			if labels == nil { // checkInputs refused nil without a null label
				labels = s.Full([]int64{n}, float64(u.cfg.NumClasses), torch.Int64, u.dev)
			}
			emb = s.Add(emb, u.labelEmb.Forward(s, labels))
		}
		return s.SiLU(emb)
	})
	defer embAct.Close()

	// Every intermediate is closed as soon as it has been used (see torch.Scope.Block).
	h := u.convIn.Forward(s, x)
	skips := []*torch.Tensor{h}
	for i, lv := range u.down {
		ch := int64(u.cfg.BaseChannels * u.cfg.ChannelMult[i])
		hi, wi := height>>i, width>>i
		for j, blk := range lv.blocks {
			h = blk.forward(s, h, nil, embAct, d)
			if a := lv.attn[j]; a != nil {
				h = replace(h, a.forward(s, h, n, ch, hi, wi))
			}
			skips = append(skips, h)
		}
		if lv.downsample != nil {
			if u.cfg.AsymmetricDownsample {
				// h is also a skip: only the padded copy is freed.
				padded := padBottomRight(s, h)
				h = replace(padded, lv.downsample.Forward(s, padded))
			} else {
				h = lv.downsample.Forward(s, h)
			}
			skips = append(skips, h)
		}
	}

	last := len(u.cfg.ChannelMult) - 1
	midCh := int64(u.cfg.BaseChannels * u.cfg.ChannelMult[last])
	h = u.mid1.forward(s, h, nil, embAct, d)
	h = replace(h, u.midAttn.forward(s, h, n, midCh, height>>last, width>>last))
	h = replace(h, u.mid2.forward(s, h, nil, embAct, d))

	for _, lv := range u.up {
		ch := int64(u.cfg.BaseChannels * u.cfg.ChannelMult[lv.level])
		hi, wi := height>>lv.level, width>>lv.level
		for j, blk := range lv.blocks {
			skip := skips[len(skips)-1]
			skips = skips[:len(skips)-1]
			h = replace(h, blk.forward(s, h, skip, embAct, d))
			skip.Close()
			if a := lv.attn[j]; a != nil {
				h = replace(h, a.forward(s, h, n, ch, hi, wi))
			}
		}
		if lv.upsample != nil {
			h = replace(h, lv.upsample.ForwardUpsample(s, h, 2))
		}
	}
	return replace(h, s.Block(func(s *torch.Scope) *torch.Tensor {
		out := u.convOut.Forward(s, u.normOut.ForwardSiLU(s, h, nil))
		if _, ok := s.Autocast(); ok {
			out = s.ToDType(out, u.dtype) // under autocast conv_out returns the lower precision
		}
		return out
	}))
}

// padBottomRight pads x (N, C, H, W) with one row of zeros at the bottom
// and one column at the right, as the original DDPM (and diffusers with
// downsample_padding 0) pads before its stride-2 convolution.
func padBottomRight(s *torch.Scope, x *torch.Tensor) *torch.Tensor {
	return s.Block(func(s *torch.Scope) *torch.Tensor {
		m, err := x.Meta()
		if err != nil {
			s.Fail(err)
			return nil
		}
		n, c, h, w := m.Shape[0], m.Shape[1], m.Shape[2], m.Shape[3]
		x = s.Cat([]*torch.Tensor{x, s.Zeros([]int64{n, c, h, 1}, m.DType, m.Device)}, 3)
		return s.Cat([]*torch.Tensor{x, s.Zeros([]int64{n, c, 1, w + 1}, m.DType, m.Device)}, 2)
	})
}

// replace frees old, an intermediate result that next was computed from,
// and returns next.
func replace(old, next *torch.Tensor) *torch.Tensor {
	old.Close()
	return next
}

// checkInputs validates the shapes of Forward's inputs and returns the batch
// size and image height and width.
func (u *UNet) checkInputs(x, t, labels *torch.Tensor) (n, height, width int64, err error) {
	xm, err := x.Meta()
	if err != nil {
		return 0, 0, 0, fmt.Errorf("unet: x: %w", err)
	}
	f := int64(1) << (len(u.cfg.ChannelMult) - 1)
	if len(xm.Shape) != 4 || xm.Shape[1] != int64(u.cfg.InChannels) {
		return 0, 0, 0, fmt.Errorf("unet: x has shape %v, want (N, %d, H, W)", xm.Shape, u.cfg.InChannels)
	}
	n, height, width = xm.Shape[0], xm.Shape[2], xm.Shape[3]
	if height%f != 0 || width%f != 0 || height == 0 || width == 0 {
		return 0, 0, 0, fmt.Errorf("unet: x is %dx%d; height and width must be positive multiples of %d", height, width, f)
	}
	if xm.DType != u.dtype {
		return 0, 0, 0, fmt.Errorf("unet: x is %s, the model's parameters are %s", xm.DType, u.dtype)
	}
	tm, err := t.Meta()
	if err != nil {
		return 0, 0, 0, fmt.Errorf("unet: t: %w", err)
	}
	if len(tm.Shape) != 1 || tm.Shape[0] != n {
		return 0, 0, 0, fmt.Errorf("unet: t has shape %v, want (%d)", tm.Shape, n)
	}
	if labels == nil {
		if u.labelEmb != nil && u.cfg.NoNullLabel {
			return 0, 0, 0, errors.New("unet: the model has no null label (no_null_label); give a label for every image")
		}
		return n, height, width, nil
	}
	if u.labelEmb == nil {
		return 0, 0, 0, errors.New("unet: labels given to an unconditional model (num_classes 0)")
	}
	lm, err := labels.Meta()
	if err != nil {
		return 0, 0, 0, fmt.Errorf("unet: labels: %w", err)
	}
	if len(lm.Shape) != 1 || lm.Shape[0] != n || lm.DType != torch.Int64 {
		return 0, 0, 0, fmt.Errorf("unet: labels are %s %v, want int64 (%d)", lm.DType, lm.Shape, n)
	}
	return n, height, width, nil
}
