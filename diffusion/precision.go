package diffusion

import (
	"fmt"

	"github.com/ddpm-go/ddpm/internal/enum"
	"github.com/ddpm-go/ddpm/torch"
)

// Precision is the arithmetic a model runs in. Weights, optimizer state,
// GroupNorm, the loss and the sampler's update stay float32 whatever it is.
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
