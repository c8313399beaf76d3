package torch

// #include <stdlib.h>
// #include "ddpm_torch.h"
import "C"

import (
	"fmt"
	"math"
	"runtime"
	"sync/atomic"
	"unsafe"
)

// maxDims is the most dimensions a tensor of the shim may have.
const maxDims = C.DDPM_MAX_DIMS

// Tensor is a handle to a libtorch tensor. Its memory is released by Close
// (directly, or by closing the Scope that created it); the garbage collector
// frees forgotten tensors only as a backstop. A Tensor may be read from many
// goroutines but must not be closed while another goroutine uses it.
type Tensor struct {
	h       C.ddpm_tensor
	closed  atomic.Bool
	cleanup runtime.Cleanup
	owner   atomic.Pointer[Scope] // the scope that frees it, if any
}

var (
	liveTensors atomic.Int64 // handles created and not yet freed
	gcFreed     atomic.Int64 // handles freed by the garbage-collector backstop
)

// LiveTensors is the number of tensor handles currently alive. Tests use it to
// prove that loops leak nothing.
func LiveTensors() int64 { return liveTensors.Load() }

// CollectedTensors is the number of tensors that were never closed and were
// freed by the garbage collector instead (each one a leak in the caller).
func CollectedTensors() int64 { return gcFreed.Load() }

func freeHandle(h C.ddpm_tensor) {
	C.ddpm_tensor_free(h)
	liveTensors.Add(-1)
	gcFreed.Add(1)
}

func newTensor(h C.ddpm_tensor) *Tensor {
	t := &Tensor{h: h}
	liveTensors.Add(1)
	t.cleanup = runtime.AddCleanup(t, freeHandle, h)
	return t
}

// Close frees the tensor now. It is safe to call more than once and on nil.
func (t *Tensor) Close() {
	if t == nil || !t.closed.CompareAndSwap(false, true) {
		return
	}
	if s := t.owner.Swap(nil); s != nil {
		s.forget(t)
	}
	t.cleanup.Stop()
	C.ddpm_tensor_free(t.h)
	t.h = nil
	liveTensors.Add(-1)
}

// handle returns the C handle, or nil for a nil or closed tensor.
func (t *Tensor) handle() C.ddpm_tensor {
	if t == nil || t.closed.Load() {
		return nil
	}
	return t.h
}

// Meta describes a tensor.
type Meta struct {
	Shape        []int64
	DType        DType
	Device       Device
	RequiresGrad bool
	IsLeaf       bool
	Contiguous   bool
}

// Meta returns the tensor's shape, dtype, device and autograd flags.
func (t *Tensor) Meta() (Meta, error) {
	h := t.handle()
	if h == nil {
		return Meta{}, ErrClosed
	}
	var m C.ddpm_meta
	e := C.ddpm_tensor_meta(h, &m)
	keepAlive(t)
	if err := takeError("meta", e); err != nil {
		return Meta{}, err
	}
	shape := make([]int64, int(m.ndim))
	for i := range shape {
		shape[i] = int64(m.shape[i])
	}
	dev := CPU
	if DeviceType(m.device_type) == DeviceCUDA {
		dev = CUDA(int(m.device_index))
	}
	return Meta{
		Shape: shape, DType: DType(m.dtype), Device: dev,
		RequiresGrad: m.requires_grad != 0, IsLeaf: m.is_leaf != 0, Contiguous: m.is_contiguous != 0,
	}, nil
}

// Shape is the tensor's size in each dimension (nil for a closed tensor).
func (t *Tensor) Shape() []int64 {
	m, _ := t.Meta()
	return m.Shape
}

// DType is the element type (0 for a closed tensor).
func (t *Tensor) DType() DType {
	m, _ := t.Meta()
	return m.DType
}

// Device is where the tensor lives.
func (t *Tensor) Device() Device {
	m, _ := t.Meta()
	return m.Device
}

// Numel is the number of elements.
func (t *Tensor) Numel() int64 { return numel(t.Shape()) }

func numel(shape []int64) int64 {
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	return n
}

func (t *Tensor) String() string {
	m, err := t.Meta()
	if err != nil {
		return "Tensor(closed)"
	}
	return fmt.Sprintf("Tensor(%v, %s, %s)", m.Shape, m.DType, m.Device)
}

// copyOut copies the tensor's elements into dst (which holds n elements of
// size bytes each), after checking the dtype.
func (t *Tensor) copyOut(want DType, dst unsafe.Pointer, nbytes int) error {
	m, err := t.Meta()
	if err != nil {
		return err
	}
	if m.DType != want {
		return &Error{Op: "copy_to_host", Msg: fmt.Sprintf("tensor is %s, not %s", m.DType, want)}
	}
	e := C.ddpm_copy_to_host(t.h, dst, C.int64_t(nbytes))
	keepAlive(t)
	return takeError("copy_to_host", e)
}

func hostSlice[E any](t *Tensor, dt DType) ([]E, error) {
	n := t.Numel()
	if t.handle() == nil {
		return nil, ErrClosed
	}
	out := make([]E, n)
	var p unsafe.Pointer
	if n > 0 {
		p = unsafe.Pointer(&out[0])
	}
	var zero E
	if err := t.copyOut(dt, p, int(n)*int(unsafe.Sizeof(zero))); err != nil {
		return nil, err
	}
	return out, nil
}

// Float32s copies a float32 tensor's elements to a new slice (row-major).
func (t *Tensor) Float32s() ([]float32, error) { return hostSlice[float32](t, Float32) }

// Float64s copies a float64 tensor's elements to a new slice (row-major).
func (t *Tensor) Float64s() ([]float64, error) { return hostSlice[float64](t, Float64) }

// Int64s copies an int64 tensor's elements to a new slice (row-major).
func (t *Tensor) Int64s() ([]int64, error) { return hostSlice[int64](t, Int64) }

// Bools copies a bool tensor's elements to a new slice (row-major).
func (t *Tensor) Bools() ([]bool, error) { return hostSlice[bool](t, Bool) }

// Bytes copies the tensor's raw little-endian element bytes (row-major).
func (t *Tensor) Bytes() ([]byte, error) {
	m, err := t.Meta()
	if err != nil {
		return nil, err
	}
	n := int(numel(m.Shape)) * m.DType.Size()
	out := make([]byte, n)
	var p unsafe.Pointer
	if n > 0 {
		p = unsafe.Pointer(&out[0])
	}
	e := C.ddpm_copy_to_host(t.h, p, C.int64_t(n))
	keepAlive(t)
	if err := takeError("copy_to_host", e); err != nil {
		return nil, err
	}
	return out, nil
}

// Item is the value of a one-element tensor.
func (t *Tensor) Item() (float64, error) {
	h := t.handle()
	if h == nil {
		return math.NaN(), ErrClosed
	}
	var v C.double
	e := C.ddpm_item(h, &v)
	keepAlive(t)
	if err := takeError("item", e); err != nil {
		return math.NaN(), err
	}
	return float64(v), nil
}

// SetRequiresGrad marks a leaf tensor as a parameter that accumulates
// gradients (or unmarks it).
func (t *Tensor) SetRequiresGrad(on bool) error {
	h := t.handle()
	if h == nil {
		return ErrClosed
	}
	v := C.int32_t(0)
	if on {
		v = 1
	}
	e := C.ddpm_set_requires_grad(h, v)
	keepAlive(t)
	return takeError("requires_grad", e)
}

// ZeroGrad drops the accumulated gradient (set to none, as PyTorch's
// zero_grad does by default).
func (t *Tensor) ZeroGrad() error {
	h := t.handle()
	if h == nil {
		return ErrClosed
	}
	e := C.ddpm_zero_grad(h)
	keepAlive(t)
	return takeError("zero_grad", e)
}
