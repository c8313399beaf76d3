package autoencoder

import (
	"fmt"
	"strconv"

	"github.com/ddpm-go/ddpm/diffusion/nn"
	"github.com/ddpm-go/ddpm/torch"
)

// Log-variance bounds of diffusers' DiagonalGaussianDistribution: the
// encoder's log-variance is clamped to them.
const (
	MinLogVar = -30
	MaxLogVar = 20
)

// Model is diffusers' AutoencoderKL. Its methods may be called from several
// goroutines at once (each with its own scope); Close must not run
// concurrently with them.
type Model struct {
	cfg    Config
	dev    torch.Device
	dtype  torch.DType
	params []nn.Param

	// Encoder.
	encConvIn  *nn.Conv2d
	encDown    []level
	encMid     *midBlock
	encNormOut *nn.GroupNorm
	encConvOut *nn.Conv2d // 2*LatentChannels: mean and log-variance
	quantConv  *nn.Conv2d // nil without use_quant_conv

	// Decoder.
	postQuantConv *nn.Conv2d // nil without use_post_quant_conv
	decConvIn     *nn.Conv2d
	decMid        *midBlock
	decUp         []level // deepest (widest) level first
	decNormOut    *nn.GroupNorm
	decConvOut    *nn.Conv2d
}

// New builds the autoencoder of cfg for encoding and decoding, with
// parameters of dtype dt on dev, initialised from gen (which must draw for
// dev; nil means libtorch's global generator) with PyTorch's default
// initialisation. The parameters carry diffusers' state_dict names. Close
// frees them.
func New(cfg Config, dev torch.Device, dt torch.DType, gen *torch.Generator) (*Model, error) {
	return build(cfg, dev, dt, gen, nn.Inference)
}

// NewForTraining is New for a model to train: the same parameters from the
// same gen, in the memory layout whose training step is fastest (NCHW on the
// CPU; see nn.Use). Either model encodes, decodes and trains correctly.
func NewForTraining(cfg Config, dev torch.Device, dt torch.DType, gen *torch.Generator) (*Model, error) {
	return build(cfg, dev, dt, gen, nn.Training)
}

func build(cfg Config, dev torch.Device, dt torch.DType, gen *torch.Generator, use nn.Use) (*Model, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if !dt.IsFloat() {
		return nil, fmt.Errorf("autoencoder: parameters must have a floating-point dtype, not %s", dt)
	}
	m := &Model{cfg: cfg.Clone(), dev: dev, dtype: dt}
	b := nn.NewBuilder(dev, dt, gen, use)
	g := int64(cfg.NormNumGroups)
	widths := make([]int64, len(cfg.BlockOutChannels))
	for i, w := range cfg.BlockOutChannels {
		widths[i] = int64(w)
	}
	last := len(widths) - 1
	latent := int64(cfg.LatentChannels)

	enc := b.Sub("encoder")
	m.encConvIn = enc.Sub("conv_in").Conv2d(int64(cfg.InChannels), widths[0], 3, nn.Padding(1))
	in := widths[0]
	for i, out := range widths {
		lb := enc.Sub("down_blocks").Sub(strconv.Itoa(i))
		m.encDown = append(m.encDown, newLevel(lb, in, out, cfg.LayersPerBlock, g, "downsamplers", i < last))
		in = out
	}
	m.encMid = newMidBlock(enc.Sub("mid_block"), widths[last], g, cfg.MidBlockAddAttention)
	m.encNormOut = enc.Sub("conv_norm_out").GroupNorm(g, widths[last], nn.Eps(normEps))
	m.encConvOut = enc.Sub("conv_out").Conv2d(widths[last], 2*latent, 3, nn.Padding(1))

	dec := b.Sub("decoder")
	m.decConvIn = dec.Sub("conv_in").Conv2d(latent, widths[last], 3, nn.Padding(1))
	m.decMid = newMidBlock(dec.Sub("mid_block"), widths[last], g, cfg.MidBlockAddAttention)
	in = widths[last]
	for i := range widths {
		out := widths[last-i]
		lb := dec.Sub("up_blocks").Sub(strconv.Itoa(i))
		m.decUp = append(m.decUp, newLevel(lb, in, out, cfg.LayersPerBlock+1, g, "upsamplers", i < last))
		in = out
	}
	m.decNormOut = dec.Sub("conv_norm_out").GroupNorm(g, widths[0], nn.Eps(normEps))
	m.decConvOut = dec.Sub("conv_out").Conv2d(widths[0], int64(cfg.OutChannels), 3, nn.Padding(1))

	if cfg.UseQuantConv {
		m.quantConv = b.Sub("quant_conv").Conv2d(2*latent, 2*latent, 1)
	}
	if cfg.UsePostQuantConv {
		m.postQuantConv = b.Sub("post_quant_conv").Conv2d(latent, latent, 1)
	}
	if err := b.Err(); err != nil {
		nn.CloseParams(b.Params())
		return nil, fmt.Errorf("autoencoder: build: %w", err)
	}
	m.params = b.Params()
	return m, nil
}

// Config is the model's configuration.
func (m *Model) Config() Config { return m.cfg.Clone() }

// Device is where the parameters live.
func (m *Model) Device() torch.Device { return m.dev }

// DType is the parameters' element type; the inputs must have it.
func (m *Model) DType() torch.DType { return m.dtype }

// Params are the parameters in creation order, named as in diffusers'
// AutoencoderKL state_dict.
func (m *Model) Params() []nn.Param { return append([]nn.Param(nil), m.params...) }

// Close frees the parameters. Safe to call more than once.
func (m *Model) Close() { nn.CloseParams(m.params) }

// Encode maps images x (N, InChannels, H, W) in the model's dtype, H and W
// positive multiples of Config.Downscale, to the mean and log-variance of
// the diagonal Gaussian posterior over latents, each (N, LatentChannels,
// H/Downscale, W/Downscale); the log-variance is clamped to [MinLogVar,
// MaxLogVar] as diffusers' DiagonalGaussianDistribution does. Both belong
// to s; failures are recorded in s.
func (m *Model) Encode(s *torch.Scope, x *torch.Tensor) (mean, logVar *torch.Tensor) {
	if s.Err() != nil {
		return nil, nil
	}
	if err := m.checkInput("x", x, int64(m.cfg.InChannels), m.cfg.Downscale()); err != nil {
		s.Fail(err)
		return nil, nil
	}
	h := m.encConvIn.Forward(s, x)
	for _, l := range m.encDown {
		h = l.down(s, h)
	}
	h = replace(h, m.encMid.forward(s, h))
	moments := replace(h, s.Block(func(s *torch.Scope) *torch.Tensor {
		out := m.encConvOut.Forward(s, m.encNormOut.ForwardSiLU(s, h, nil))
		if m.quantConv != nil {
			out = m.quantConv.Forward(s, out)
		}
		return out
	}))
	if s.Err() != nil {
		return nil, nil
	}
	parts := s.Chunk(moments, 2, 1)
	if s.Err() != nil {
		return nil, nil
	}
	return parts[0], s.Clamp(parts[1], MinLogVar, MaxLogVar)
}

// Sample draws a latent from the posterior N(mean, exp(logVar)) by the
// reparameterisation z = mean + exp(logVar/2) * eps, eps ~ N(0, I) drawn
// from gen (nil: libtorch's global generator), so gradients flow to mean
// and logVar. The result belongs to s.
func (m *Model) Sample(s *torch.Scope, mean, logVar *torch.Tensor, gen *torch.Generator) *torch.Tensor {
	if s.Err() != nil {
		return nil
	}
	eps := s.Randn(mean.Shape(), mean.DType(), mean.Device(), gen)
	return s.Add(mean, s.Mul(s.Exp(s.MulScalar(logVar, 0.5)), eps))
}

// Decode maps latents z (N, LatentChannels, h, w) in the model's dtype to
// images (N, OutChannels, h*Downscale, w*Downscale). The result belongs to
// s; failures are recorded in s.
func (m *Model) Decode(s *torch.Scope, z *torch.Tensor) *torch.Tensor {
	if s.Err() != nil {
		return nil
	}
	if err := m.checkInput("z", z, int64(m.cfg.LatentChannels), 1); err != nil {
		s.Fail(err)
		return nil
	}
	h := s.Block(func(s *torch.Scope) *torch.Tensor {
		if m.postQuantConv != nil {
			z = m.postQuantConv.Forward(s, z)
		}
		return m.decConvIn.Forward(s, z)
	})
	h = replace(h, m.decMid.forward(s, h))
	for _, l := range m.decUp {
		h = l.up(s, h)
	}
	return replace(h, s.Block(func(s *torch.Scope) *torch.Tensor {
		return m.decConvOut.Forward(s, m.decNormOut.ForwardSiLU(s, h, nil))
	}))
}

// ScaleLatents maps latents z to the space a latent diffusion model works
// in, (z - shift_factor) * scaling_factor, as diffusers' pipelines do.
func (m *Model) ScaleLatents(s *torch.Scope, z *torch.Tensor) *torch.Tensor {
	return s.MulScalar(s.AddScalar(z, -m.cfg.Shift()), m.cfg.ScalingFactor)
}

// UnscaleLatents is the inverse of ScaleLatents: z / scaling_factor +
// shift_factor, what Decode takes.
func (m *Model) UnscaleLatents(s *torch.Scope, z *torch.Tensor) *torch.Tensor {
	return s.AddScalar(s.DivScalar(z, m.cfg.ScalingFactor), m.cfg.Shift())
}

// checkInput validates a 4-D input of channels channels, dtype the model's,
// height and width positive multiples of multiple.
func (m *Model) checkInput(name string, x *torch.Tensor, channels, multiple int64) error {
	meta, err := x.Meta()
	if err != nil {
		return fmt.Errorf("autoencoder: %s: %w", name, err)
	}
	if len(meta.Shape) != 4 || meta.Shape[1] != channels || meta.Shape[0] == 0 {
		return fmt.Errorf("autoencoder: %s has shape %v, want (N, %d, H, W)", name, meta.Shape, channels)
	}
	if h, w := meta.Shape[2], meta.Shape[3]; h <= 0 || w <= 0 || h%multiple != 0 || w%multiple != 0 {
		return fmt.Errorf("autoencoder: %s is %dx%d; height and width must be positive multiples of %d", name, h, w, multiple)
	}
	if meta.DType != m.dtype {
		return fmt.Errorf("autoencoder: %s is %s, the model's parameters are %s", name, meta.DType, m.dtype)
	}
	return nil
}
