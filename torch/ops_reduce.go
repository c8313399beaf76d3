package torch

// #include "ddpm_torch.h"
import "C"

func (s *Scope) reduce(op string, code C.int32_t, a *Tensor, dims []int64, keepdim bool) *Tensor {
	if !s.ready(op, a) {
		return nil
	}
	var out C.ddpm_tensor
	p, n := int64s(dims)
	return s.wrap(op, C.ddpm_reduce(s.mode, code, a.h, p, n, cBool(keepdim), &out), out, a)
}

// Sum adds over dims (all dims when dims is empty).
func (s *Scope) Sum(a *Tensor, dims []int64, keepdim bool) *Tensor {
	return s.reduce("sum", C.DDPM_SUM, a, dims, keepdim)
}

// Mean averages over dims (all dims when dims is empty).
func (s *Scope) Mean(a *Tensor, dims []int64, keepdim bool) *Tensor {
	return s.reduce("mean", C.DDPM_MEAN, a, dims, keepdim)
}

// Var is the unbiased (n-1) variance over dims (all when empty).
func (s *Scope) Var(a *Tensor, dims []int64, keepdim bool) *Tensor {
	return s.reduce("var", C.DDPM_VAR, a, dims, keepdim)
}

// VarPop is the population (n) variance over dims (all when empty).
func (s *Scope) VarPop(a *Tensor, dims []int64, keepdim bool) *Tensor {
	return s.reduce("var", C.DDPM_VAR_POP, a, dims, keepdim)
}

// Std is the unbiased standard deviation over dims (all when empty).
func (s *Scope) Std(a *Tensor, dims []int64, keepdim bool) *Tensor {
	return s.reduce("std", C.DDPM_STD, a, dims, keepdim)
}

// Max is the largest value over dims (all when empty).
func (s *Scope) Max(a *Tensor, dims []int64, keepdim bool) *Tensor {
	return s.reduce("amax", C.DDPM_AMAX, a, dims, keepdim)
}

// Min is the smallest value over dims (all when empty).
func (s *Scope) Min(a *Tensor, dims []int64, keepdim bool) *Tensor {
	return s.reduce("amin", C.DDPM_AMIN, a, dims, keepdim)
}

// Norm is the Euclidean norm over dims (all when empty).
func (s *Scope) Norm(a *Tensor, dims []int64, keepdim bool) *Tensor {
	return s.reduce("norm", C.DDPM_NORM2, a, dims, keepdim)
}

// ArgMax is the index of the largest value along dim.
func (s *Scope) ArgMax(a *Tensor, dim int64, keepdim bool) *Tensor {
	return s.reduce("argmax", C.DDPM_ARGMAX, a, []int64{dim}, keepdim)
}
