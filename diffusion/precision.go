package diffusion

import (
	"errors"
	"fmt"

	"github.com/ddpm-go/ddpm/internal/enum"
	"github.com/ddpm-go/ddpm/torch"
)

// Precision is the arithmetic a model runs in. Under BF16 and FP16 the
// convolutions, linear layers and attention products run in the lower
// precision (torch.NewAutocastScope), while GroupNorm, softmax, the loss,
// every accumulating reduction, the weights, the optimizer state, the EMA and
// the sampler's update stay float32 (the schedule's coefficients float64).
type Precision string

const (
	// Float32 runs everything in float32.
	Float32 Precision = "float32"
	// BF16 autocasts matrix products and convolutions to bfloat16 (CPU or
	// CUDA).
	BF16 Precision = "bf16"
	// FP16 autocasts them to float16 with a dynamic loss scale in training
	// (CUDA only).
	FP16 Precision = "fp16"
)

var precisions = []Precision{Float32, BF16, FP16}

// ParsePrecision parses a precision the enum way; "fp32", "bfloat16" and
// "float16" are accepted too.
func ParsePrecision(s string) (Precision, error) {
	v, err := enum.Parse("precision", s, precisions,
		map[string]Precision{"fp32": Float32, "bfloat16": BF16, "float16": FP16, "half": FP16})
	if err != nil {
		return "", fmt.Errorf("diffusion: %w", err)
	}
	return v, nil
}

// Valid reports whether p is one of Float32, BF16 and FP16.
func (p Precision) Valid() bool { return enum.Valid(p, precisions) }

// Autocast is the dtype autocast runs at, and false for Float32.
func (p Precision) Autocast() (torch.DType, bool) {
	switch p {
	case BF16:
		return torch.BFloat16, true
	case FP16:
		return torch.Float16, true
	}
	return torch.Float32, false
}

// cpuHasBF16 is torch.CPUHasBF16; tests replace it.
var cpuHasBF16 = torch.CPUHasBF16

// Check reports, in one line, why p cannot run on dev: FP16 needs a CUDA
// device, and BF16 on the CPU needs bfloat16 instructions (x86 AVX512_BF16
// or AMX-BF16, ARM BF16), checked on the CPU at hand; without them libtorch
// emulates bfloat16 more slowly than float32 runs. Float32 runs everywhere.
func (p Precision) Check(dev torch.Device) error {
	switch {
	case !p.Valid():
		return fmt.Errorf("diffusion: unknown precision %q (valid: %s, %s, %s)", p, Float32, BF16, FP16)
	case p == FP16 && dev.Type != torch.DeviceCUDA:
		return fmt.Errorf("diffusion: precision fp16 needs a CUDA device (this run is on %s); on the CPU use bf16", dev)
	case p == BF16 && dev.Type == torch.DeviceCPU && !cpuHasBF16():
		return errors.New("diffusion: precision bf16 needs a CPU with bfloat16 instructions (x86 avx512_bf16 or amx_bf16, arm64 bf16), and this one has none; use float32")
	}
	return nil
}

// Wrap returns m running its forward passes in p: for BF16 and FP16 in an
// autocast scope of the caller's mode, the result cast back to float32 and
// handed to the caller's scope, so that a sampler's own arithmetic on it
// stays float32 (its schedule coefficients float64). For Float32 it is m.
func (p Precision) Wrap(m Model) Model {
	dt, ok := p.Autocast()
	if !ok {
		return m
	}
	return autocastModel{m: m, dt: dt}
}

// autocastModel is a Model whose forward runs under autocast.
type autocastModel struct {
	m  Model
	dt torch.DType
}

func (a autocastModel) Forward(s *torch.Scope, x, t, labels *torch.Tensor) *torch.Tensor {
	c, err := torch.NewAutocastScope(s.Mode(), a.dt)
	if err != nil {
		s.Fail(err)
		return nil
	}
	return s.BlockIn(c, func(c *torch.Scope) *torch.Tensor {
		out := a.m.Forward(c, x, t, labels)
		if out != nil && out.DType() != torch.Float32 {
			out = c.ToDType(out, torch.Float32)
		}
		return out
	})
}
