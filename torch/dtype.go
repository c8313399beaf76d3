package torch

// #include "ddpm_torch.h"
import "C"

import (
	"fmt"
	"strings"
)

// DType is a tensor element type.
type DType int32

// The element types the package supports.
const (
	Uint8    DType = C.DDPM_UINT8
	Int64    DType = C.DDPM_INT64
	Float16  DType = C.DDPM_FLOAT16
	Float32  DType = C.DDPM_FLOAT32
	Float64  DType = C.DDPM_FLOAT64
	Bool     DType = C.DDPM_BOOL
	BFloat16 DType = C.DDPM_BFLOAT16
)

var dtypeNames = map[DType]string{
	Uint8: "uint8", Int64: "int64", Float16: "float16", Float32: "float32",
	Float64: "float64", Bool: "bool", BFloat16: "bfloat16",
}

var dtypeSizes = map[DType]int{
	Uint8: 1, Int64: 8, Float16: 2, Float32: 4, Float64: 8, Bool: 1, BFloat16: 2,
}

func (d DType) String() string {
	if n, ok := dtypeNames[d]; ok {
		return n
	}
	return fmt.Sprintf("dtype(%d)", int32(d))
}

// Size is the number of bytes per element (0 for an unknown dtype).
func (d DType) Size() int { return dtypeSizes[d] }

// IsFloat reports whether d is a floating-point type.
func (d DType) IsFloat() bool {
	return d == Float16 || d == Float32 || d == Float64 || d == BFloat16
}

// ParseDType accepts "float32", "fp32", "float64", "fp16", "bf16", "int64", "bool".
func ParseDType(s string) (DType, error) {
	switch strings.ToLower(s) {
	case "float32", "fp32", "f32":
		return Float32, nil
	case "float64", "fp64", "f64", "double":
		return Float64, nil
	case "float16", "fp16", "f16", "half":
		return Float16, nil
	case "bfloat16", "bf16":
		return BFloat16, nil
	case "int64", "long", "i64":
		return Int64, nil
	case "bool":
		return Bool, nil
	case "uint8", "u8", "byte":
		return Uint8, nil
	}
	return 0, fmt.Errorf("unknown dtype %q (want float32, float64, float16, bfloat16, int64, uint8 or bool)", s)
}
