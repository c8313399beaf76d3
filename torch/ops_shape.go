package torch

// #include "ddpm_torch.h"
import "C"

import "fmt"

func (s *Scope) withDims(op string, a *Tensor, dims []int64,
	f func(C.ddpm_mode, C.ddpm_tensor, *C.int64_t, C.int64_t, *C.ddpm_tensor) C.ddpm_error) *Tensor {
	if !s.ready(op, a) {
		return nil
	}
	var out C.ddpm_tensor
	p, n := int64s(dims)
	return s.wrap(op, f(s.mode, a.h, p, n, &out), out, a)
}

// Reshape returns a with a new shape (one dim may be -1).
func (s *Scope) Reshape(a *Tensor, shape ...int64) *Tensor {
	return s.withDims("reshape", a, shape, func(m C.ddpm_mode, h C.ddpm_tensor, p *C.int64_t, n C.int64_t, out *C.ddpm_tensor) C.ddpm_error {
		return C.ddpm_reshape(m, h, p, n, out)
	})
}

// Expand broadcasts a to shape without copying (-1 keeps a dim).
func (s *Scope) Expand(a *Tensor, shape ...int64) *Tensor {
	return s.withDims("expand", a, shape, func(m C.ddpm_mode, h C.ddpm_tensor, p *C.int64_t, n C.int64_t, out *C.ddpm_tensor) C.ddpm_error {
		return C.ddpm_expand(m, h, p, n, out)
	})
}

// Permute reorders the dims of a.
func (s *Scope) Permute(a *Tensor, dims ...int64) *Tensor {
	return s.withDims("permute", a, dims, func(m C.ddpm_mode, h C.ddpm_tensor, p *C.int64_t, n C.int64_t, out *C.ddpm_tensor) C.ddpm_error {
		return C.ddpm_permute(m, h, p, n, out)
	})
}

// Transpose swaps two dims.
func (s *Scope) Transpose(a *Tensor, d0, d1 int64) *Tensor {
	if !s.ready("transpose", a) {
		return nil
	}
	var out C.ddpm_tensor
	return s.wrap("transpose", C.ddpm_transpose(s.mode, a.h, C.int64_t(d0), C.int64_t(d1), &out), out, a)
}

// Narrow is a[start:start+length] along dim (a view).
func (s *Scope) Narrow(a *Tensor, dim, start, length int64) *Tensor {
	if !s.ready("narrow", a) {
		return nil
	}
	var out C.ddpm_tensor
	return s.wrap("narrow", C.ddpm_narrow(s.mode, a.h, C.int64_t(dim), C.int64_t(start), C.int64_t(length), &out), out, a)
}

// Unsqueeze inserts a dim of size 1 at dim.
func (s *Scope) Unsqueeze(a *Tensor, dim int64) *Tensor {
	if !s.ready("unsqueeze", a) {
		return nil
	}
	var out C.ddpm_tensor
	return s.wrap("unsqueeze", C.ddpm_unsqueeze(s.mode, a.h, C.int64_t(dim), &out), out, a)
}

// Squeeze removes dim if its size is 1.
func (s *Scope) Squeeze(a *Tensor, dim int64) *Tensor {
	if !s.ready("squeeze", a) {
		return nil
	}
	var out C.ddpm_tensor
	return s.wrap("squeeze", C.ddpm_squeeze(s.mode, a.h, C.int64_t(dim), &out), out, a)
}

// Contiguous returns a in row-major (NCHW) layout.
func (s *Scope) Contiguous(a *Tensor) *Tensor { return s.layout("contiguous", a, C.DDPM_CONTIGUOUS) }

// ChannelsLast returns a 4-D tensor in NHWC memory layout (same shape), which
// convolution kernels often run faster on.
func (s *Scope) ChannelsLast(a *Tensor) *Tensor {
	return s.layout("channels_last", a, C.DDPM_CHANNELS_LAST)
}

func (s *Scope) layout(op string, a *Tensor, format C.int32_t) *Tensor {
	if !s.ready(op, a) {
		return nil
	}
	var out C.ddpm_tensor
	return s.wrap(op, C.ddpm_contiguous(s.mode, a.h, format, &out), out, a)
}

// Cat joins tensors along an existing dim.
func (s *Scope) Cat(ts []*Tensor, dim int64) *Tensor { return s.join("cat", ts, dim, false) }

// Stack joins tensors along a new dim.
func (s *Scope) Stack(ts []*Tensor, dim int64) *Tensor { return s.join("stack", ts, dim, true) }

func (s *Scope) join(op string, ts []*Tensor, dim int64, stack bool) *Tensor {
	if len(ts) == 0 {
		s.fail(&Error{Op: op, Msg: "needs at least one tensor"})
		return nil
	}
	if !s.ready(op, ts...) {
		return nil
	}
	hs, err := handles(op, ts)
	if err != nil {
		s.fail(err)
		return nil
	}
	var out C.ddpm_tensor
	return s.wrap(op, C.ddpm_cat(s.mode, &hs[0], C.int64_t(len(hs)), C.int64_t(dim), cBool(stack), &out), out, ts...)
}

// Split cuts a along dim into pieces of the given sizes.
func (s *Scope) Split(a *Tensor, sizes []int64, dim int64) []*Tensor {
	if !s.ready("split", a) {
		return nil
	}
	if len(sizes) == 0 {
		s.fail(&Error{Op: "split", Msg: "needs at least one size"})
		return nil
	}
	outs := make([]C.ddpm_tensor, len(sizes)) // C pointers only: cgo may fill it
	p, n := int64s(sizes)
	if !s.check("split", C.ddpm_split(s.mode, a.h, p, n, C.int64_t(dim), &outs[0]), a) {
		return nil
	}
	res := make([]*Tensor, len(sizes))
	for i, h := range outs {
		res[i] = newTensor(h)
		s.Adopt(res[i])
	}
	return res
}

// Chunk cuts a along dim into n pieces as torch.chunk does: pieces of
// ceil(size/n), the last one smaller, possibly fewer than n.
func (s *Scope) Chunk(a *Tensor, n int, dim int64) []*Tensor {
	if !s.ready("chunk", a) {
		return nil
	}
	shape := a.Shape()
	d := dim
	if d < 0 {
		d += int64(len(shape))
	}
	if n < 1 || d < 0 || d >= int64(len(shape)) {
		s.fail(&Error{Op: "chunk", Msg: fmt.Sprintf("bad chunk count %d or dim %d for shape %v", n, dim, shape)})
		return nil
	}
	size := shape[d]
	step := (size + int64(n) - 1) / int64(n)
	if step == 0 {
		step = 1
	}
	var sizes []int64
	for left := size; left > 0; left -= step {
		sizes = append(sizes, min(step, left))
	}
	if len(sizes) == 0 {
		sizes = make([]int64, n) // torch.chunk of an empty dim: n empty pieces
	}
	return s.Split(a, sizes, dim)
}

// IndexSelect picks the entries of a along dim at the int64 positions index.
func (s *Scope) IndexSelect(a *Tensor, dim int64, index *Tensor) *Tensor {
	if !s.ready("index_select", a, index) {
		return nil
	}
	var out C.ddpm_tensor
	return s.wrap("index_select", C.ddpm_index_select(s.mode, a.h, C.int64_t(dim), index.h, &out), out, a, index)
}

// Gather is torch.gather: out[i][j] = a[index[i][j]][j] for dim 0, and so on.
func (s *Scope) Gather(a *Tensor, dim int64, index *Tensor) *Tensor {
	if !s.ready("gather", a, index) {
		return nil
	}
	var out C.ddpm_tensor
	return s.wrap("gather", C.ddpm_gather(s.mode, a.h, C.int64_t(dim), index.h, &out), out, a, index)
}
