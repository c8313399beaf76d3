package nn

import (
	"fmt"
	"math"
	"os"

	"github.com/ddpm-go/ddpm/torch"
)

// Builder creates the parameters of a network, one after the other, on one
// device and dtype, drawing their initial values from one generator: the same
// seed and the same sequence of calls give the same weights.
//
// Names nest with dots as in PyTorch's state_dict: parameters created through
// b.Sub("down").Sub("0") are called "down.0.weight" and so on. Every
// parameter requires grad, has no autograd history and is owned by the
// caller (free them with CloseParams(b.Params())).
//
// Errors are sticky: after the first failure every later call creates
// nothing and returns nil tensors; check Err once the network is built. A
// Builder is not safe for concurrent use.
type Builder struct {
	prefix string
	st     *buildState
}

// buildState is shared by a Builder and all its Subs.
type buildState struct {
	dev          torch.Device
	dtype        torch.DType
	gen          *torch.Generator
	channelsLast bool // convolutions in NHWC (see Conv2d)
	params       []Param
	names        map[string]bool
	err          error
}

// Use is what a network is built for. On the CPU it picks the memory layout
// of its convolutions (see Conv2d); elsewhere it changes nothing, and a
// network built for one use computes the same values in the other.
type Use uint8

const (
	// Inference (sampling, evaluation, serving): convolutions channels-last
	// on the CPU, whose forwards were 2-26% faster.
	Inference Use = iota
	// Training: convolutions NCHW, whose training steps were 1-19% faster on
	// the CPU (libtorch 1.13's GroupNorm backward is slow on channels-last
	// maps).
	Training
)

// ChannelsLastEnv is the environment variable that, read when a Builder is
// made, overrides the layout its Use picks on the CPU: 1 makes every
// convolution channels-last, 0 keeps every one NCHW (unset: by Use).
const ChannelsLastEnv = "DDPM_CHANNELS_LAST"

// NewBuilder returns a Builder that creates parameters of dtype dt on dev,
// for use. gen must draw for dev; nil means libtorch's global generator.
func NewBuilder(dev torch.Device, dt torch.DType, gen *torch.Generator, use Use) *Builder {
	st := &buildState{dev: dev, dtype: dt, gen: gen, names: make(map[string]bool)}
	cpu := dev.Type == torch.DeviceCPU
	switch v := os.Getenv(ChannelsLastEnv); v {
	case "":
		st.channelsLast = cpu && use == Inference
	case "1":
		st.channelsLast = cpu
	case "0":
	default:
		st.err = fmt.Errorf("nn: %s=%q: want 1 (convolutions channels-last on the CPU), 0 (NCHW) or unset (channels-last for inference, NCHW for training)", ChannelsLastEnv, v)
	}
	return &Builder{st: st}
}

// Sub returns a Builder for the child module name: its parameters are
// prefixed with "name.". It shares its parent's parameters and errors.
func (b *Builder) Sub(name string) *Builder {
	return &Builder{prefix: b.Name(name), st: b.st}
}

// Name is the full dotted name of leaf under this Builder.
func (b *Builder) Name(leaf string) string {
	if b.prefix == "" {
		return leaf
	}
	return b.prefix + "." + leaf
}

// Device is where the parameters are created.
func (b *Builder) Device() torch.Device { return b.st.dev }

// DType is the parameters' element type.
func (b *Builder) DType() torch.DType { return b.st.dtype }

// Params is every parameter created so far through this Builder, its parent
// and its Subs, in creation order.
func (b *Builder) Params() []Param {
	return append([]Param(nil), b.st.params...)
}

// Err is the first error of the Builder, or nil.
func (b *Builder) Err() error { return b.st.err }

// Uniform creates the parameter leaf of shape with values drawn from
// U(-bound, bound).
func (b *Builder) Uniform(leaf string, shape []int64, bound float64) *torch.Tensor {
	return b.create(leaf, shape, func(s *torch.Scope, dt torch.DType) *torch.Tensor {
		u := s.Rand(shape, dt, b.st.dev, b.st.gen)
		return s.AddScalar(s.MulScalar(u, 2*bound), -bound)
	})
}

// Normal creates the parameter leaf of shape with values drawn from
// N(0, std^2).
func (b *Builder) Normal(leaf string, shape []int64, std float64) *torch.Tensor {
	return b.create(leaf, shape, func(s *torch.Scope, dt torch.DType) *torch.Tensor {
		return s.MulScalar(s.Randn(shape, dt, b.st.dev, b.st.gen), std)
	})
}

// Constant creates the parameter leaf of shape filled with value.
func (b *Builder) Constant(leaf string, shape []int64, value float64) *torch.Tensor {
	return b.create(leaf, shape, func(s *torch.Scope, dt torch.DType) *torch.Tensor {
		return s.Full(shape, value, dt, b.st.dev)
	})
}

// KaimingUniformBound is the bound of PyTorch's default initialisation of
// Linear and Conv2d weights and biases: kaiming_uniform_ with a = sqrt(5)
// gives U(-1/sqrt(fanIn), 1/sqrt(fanIn)), and the bias uses the same bound.
func KaimingUniformBound(fanIn int64) float64 {
	if fanIn <= 0 {
		return 0
	}
	return 1 / math.Sqrt(float64(fanIn))
}

// create makes one parameter: fill draws its values (in a no-grad scope, in
// the dtype it is given), create converts them to the Builder's dtype, marks
// the result as requiring grad and records it.
func (b *Builder) create(leaf string, shape []int64, fill func(s *torch.Scope, dt torch.DType) *torch.Tensor) *torch.Tensor {
	st := b.st
	if st.err != nil {
		return nil
	}
	name := b.Name(leaf)
	if st.names[name] {
		st.err = fmt.Errorf("nn: parameter %q created twice", name)
		return nil
	}
	for _, d := range shape {
		if d < 0 {
			st.err = fmt.Errorf("nn: parameter %q: negative size in shape %v", name, shape)
			return nil
		}
	}
	// Draw in float32 (or float64) and convert: half-precision random
	// kernels are not available everywhere.
	drawType := torch.Float32
	if st.dtype == torch.Float64 {
		drawType = torch.Float64
	}
	s := torch.NewScope(torch.NoGrad)
	defer s.Close()
	t := fill(s, drawType)
	if drawType != st.dtype {
		t = s.ToDType(t, st.dtype)
	}
	// Contiguous (or ChannelsLast) makes the parameter its own tensor, not a
	// view.
	if st.channelsLast && len(shape) == 4 {
		t = s.ChannelsLast(t)
	} else {
		t = s.Contiguous(t)
	}
	if err := s.Err(); err != nil {
		st.err = fmt.Errorf("nn: create parameter %q: %w", name, err)
		return nil
	}
	s.Keep(t)
	if st.dtype.IsFloat() {
		if err := t.SetRequiresGrad(true); err != nil {
			t.Close()
			st.err = fmt.Errorf("nn: create parameter %q: %w", name, err)
			return nil
		}
	}
	st.names[name] = true
	st.params = append(st.params, Param{Name: name, T: t})
	return t
}
