package torch

// #include "ddpm_torch.h"
import "C"

import (
	"fmt"
	"unsafe"
)

func fromSlice[E any](s *Scope, op string, data []E, dt DType, shape []int64) *Tensor {
	if !s.ready(op) {
		return nil
	}
	if n := numel(shape); n != int64(len(data)) {
		s.fail(&Error{Op: op, Msg: fmt.Sprintf("%d values do not fill shape %v (%d elements)", len(data), shape, n)})
		return nil
	}
	var p unsafe.Pointer
	if len(data) > 0 {
		p = unsafe.Pointer(&data[0])
	}
	var zero E
	return s.fromPointer(op, p, len(data)*int(unsafe.Sizeof(zero)), dt, shape)
}

func (s *Scope) fromPointer(op string, p unsafe.Pointer, nbytes int, dt DType, shape []int64) *Tensor {
	var out C.ddpm_tensor
	sp, sn := int64s(shape)
	return s.wrap(op, C.ddpm_from_data(p, C.int64_t(nbytes), C.int32_t(dt), sp, sn, C.int32_t(DeviceCPU), -1, &out), out)
}

// FromFloat32s makes a CPU float32 tensor of shape from data (row-major).
func (s *Scope) FromFloat32s(data []float32, shape ...int64) *Tensor {
	return fromSlice(s, "from_float32s", data, Float32, shape)
}

// FromFloat64s makes a CPU float64 tensor of shape from data (row-major).
func (s *Scope) FromFloat64s(data []float64, shape ...int64) *Tensor {
	return fromSlice(s, "from_float64s", data, Float64, shape)
}

// FromInt64s makes a CPU int64 tensor of shape from data (row-major).
func (s *Scope) FromInt64s(data []int64, shape ...int64) *Tensor {
	return fromSlice(s, "from_int64s", data, Int64, shape)
}

// FromBools makes a CPU bool tensor of shape from data (row-major).
func (s *Scope) FromBools(data []bool, shape ...int64) *Tensor {
	return fromSlice(s, "from_bools", data, Bool, shape)
}

// FromBytes makes a CPU tensor of dtype and shape from raw little-endian
// element bytes (the layout of Bytes and of safetensors files).
func (s *Scope) FromBytes(data []byte, dt DType, shape ...int64) *Tensor {
	if !s.ready("from_bytes") {
		return nil
	}
	if dt.Size() == 0 {
		s.fail(&Error{Op: "from_bytes", Msg: fmt.Sprintf("unsupported dtype %v", dt)})
		return nil
	}
	var p unsafe.Pointer
	if len(data) > 0 {
		p = unsafe.Pointer(&data[0])
	}
	return s.fromPointer("from_bytes", p, len(data), dt, shape)
}

// Full makes a tensor of shape filled with value.
func (s *Scope) Full(shape []int64, value float64, dt DType, dev Device) *Tensor {
	if !s.ready("full") {
		return nil
	}
	var out C.ddpm_tensor
	p, n := int64s(shape)
	return s.wrap("full", C.ddpm_full(s.mode, p, n, C.double(value), C.int32_t(dt), dev.cType(), dev.cIndex(), &out), out)
}

// Zeros makes a tensor of shape filled with 0.
func (s *Scope) Zeros(shape []int64, dt DType, dev Device) *Tensor { return s.Full(shape, 0, dt, dev) }

// Ones makes a tensor of shape filled with 1.
func (s *Scope) Ones(shape []int64, dt DType, dev Device) *Tensor { return s.Full(shape, 1, dt, dev) }

// Arange is 0, 1, ..., n-1.
func (s *Scope) Arange(n int64, dt DType, dev Device) *Tensor {
	if !s.ready("arange") {
		return nil
	}
	var out C.ddpm_tensor
	return s.wrap("arange", C.ddpm_arange(s.mode, C.int64_t(n), C.int32_t(dt), dev.cType(), dev.cIndex(), &out), out)
}

// To moves a to dev. Like PyTorch's Tensor.to, it returns a tensor sharing
// a's storage when a already is there; use Clone for a copy.
func (s *Scope) To(a *Tensor, dev Device) *Tensor { return s.convert(a, -1, dev) }

// ToDType converts a's elements to dt on its own device (sharing a's
// storage when a already has that dtype).
func (s *Scope) ToDType(a *Tensor, dt DType) *Tensor { return s.convert(a, dt, a.Device()) }

func (s *Scope) convert(a *Tensor, dt DType, dev Device) *Tensor {
	if !s.ready("to", a) {
		return nil
	}
	var out C.ddpm_tensor
	return s.wrap("to", C.ddpm_to(s.mode, a.h, C.int32_t(dt), dev.cType(), dev.cIndex(), &out), out, a)
}

// Clone copies a (recorded by autograd in Grad mode).
func (s *Scope) Clone(a *Tensor) *Tensor {
	if !s.ready("clone", a) {
		return nil
	}
	var out C.ddpm_tensor
	return s.wrap("clone", C.ddpm_clone(s.mode, a.h, &out), out, a)
}

// Detach shares a's storage without its autograd history.
func (s *Scope) Detach(a *Tensor) *Tensor {
	if !s.ready("detach", a) {
		return nil
	}
	var out C.ddpm_tensor
	return s.wrap("detach", C.ddpm_detach(a.h, &out), out, a)
}
