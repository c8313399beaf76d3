package torch

// #include <stdlib.h>
// #include "ddpm_torch.h"
import "C"

import (
	"fmt"
	"sync"
)

// Mode is libtorch's autograd mode for the operations of a Scope.
type Mode int32

// Autograd modes.
const (
	// Grad records operations so that Backward can differentiate them.
	Grad Mode = C.DDPM_MODE_GRAD
	// NoGrad records nothing, like torch.no_grad(): for optimizer and EMA
	// updates and evaluation.
	NoGrad Mode = C.DDPM_MODE_NO_GRAD
	// Inference is torch.inference_mode(): the fastest for sampling; its
	// tensors can never enter autograd later.
	Inference Mode = C.DDPM_MODE_INFERENCE
)

func (m Mode) String() string {
	switch m {
	case Grad:
		return "grad"
	case NoGrad:
		return "no-grad"
	case Inference:
		return "inference"
	}
	return fmt.Sprintf("mode(%d)", int32(m))
}

// Scope creates tensors and owns them: Close frees every tensor made through
// the scope that was not handed out with Keep. A training or sampling step runs
// in one scope; parameters and optimizer state are kept outside.
//
// The scope's Mode travels with every libtorch call it makes, so the mode is
// right whichever OS thread the goroutine happens to run on (libtorch keeps
// grad mode per thread; Go moves goroutines between threads).
//
// Errors are sticky, as with bufio.Scanner: the first failing operation
// records its error, returns nil, and every later operation of the scope
// returns nil without calling libtorch. Check Err after a block of operations.
// A Scope may be shared by goroutines.
type Scope struct {
	mode C.ddpm_mode

	mu     sync.Mutex
	owned  map[*Tensor]struct{}
	err    error
	closed bool
}

// NewScope returns an empty scope whose operations run in mode.
func NewScope(mode Mode) *Scope {
	return &Scope{mode: C.ddpm_mode(mode), owned: make(map[*Tensor]struct{})}
}

// NewAutocastScope returns a scope whose operations run in mode with
// autocast to dt (BFloat16 on CPU or CUDA, Float16 on CUDA), as inside
// torch.autocast: convolutions and matmuls run in dt, while reductions,
// normalisations, softmax and losses stay in float32.
func NewAutocastScope(mode Mode, dt DType) (*Scope, error) {
	var flag C.ddpm_mode
	switch dt {
	case BFloat16:
		flag = C.DDPM_AUTOCAST_BF16
	case Float16:
		flag = C.DDPM_AUTOCAST_FP16
	default:
		return nil, fmt.Errorf("autocast to %s: want bfloat16 or float16", dt)
	}
	return &Scope{mode: C.ddpm_mode(mode) | flag, owned: make(map[*Tensor]struct{})}, nil
}

// Mode is the scope's autograd mode.
func (s *Scope) Mode() Mode { return Mode(s.mode & 3) }

// Autocast is the dtype the scope autocasts to, and false when it does not.
func (s *Scope) Autocast() (DType, bool) {
	switch {
	case s.mode&C.DDPM_AUTOCAST_BF16 != 0:
		return BFloat16, true
	case s.mode&C.DDPM_AUTOCAST_FP16 != 0:
		return Float16, true
	}
	return Float32, false
}

// Child returns a new, empty scope that runs in s's mode and autocast
// setting, for the intermediates of a block that should be freed before s
// closes. It does not close with s.
func (s *Scope) Child() *Scope {
	return &Scope{mode: s.mode, owned: make(map[*Tensor]struct{})}
}

// Block runs f in a child scope of s (same mode and autocast) and hands
// only f's result to s: the intermediates of a model's block are freed when
// the block is done rather than when the whole pass is (autograd keeps its
// own references to what backward needs). Freeing early lets the CPU
// allocator reuse memory within a pass: a U-Net forward that held every
// intermediate ran memory-bound operations such as GroupNorm and SiLU
// several times slower. A failure in f is recorded in s, and Block returns
// nil; so does a scope that has failed already, without calling f.
func (s *Scope) Block(f func(c *Scope) *Tensor) *Tensor { return s.BlockIn(s.Child(), f) }

// BlockIn is Block with the child scope c given (an autocast scope, say):
// f runs in c, which BlockIn closes, and only f's result is handed to s. A
// result c does not own (a parameter, another scope's tensor) stays with
// its owner.
func (s *Scope) BlockIn(c *Scope, f func(c *Scope) *Tensor) *Tensor {
	defer c.Close()
	if s.Err() != nil {
		return nil
	}
	out := f(c)
	if err := c.Err(); err != nil {
		s.Fail(err)
		return nil
	}
	if out != nil && out.owner.Load() == c {
		c.Keep(out)
		s.Adopt(out)
	}
	return out
}

// Err is the first error of the scope's operations, or nil.
func (s *Scope) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Close frees every tensor the scope still owns and makes later operations
// fail with ErrClosed. Safe to call more than once.
func (s *Scope) Close() {
	s.mu.Lock()
	owned := s.owned
	s.owned = nil
	s.closed = true
	s.mu.Unlock()
	for t := range owned {
		// The map is gone, so t need not be forgotten. A tensor whose owner
		// is no longer s was adopted by another scope (or is being closed)
		// since the map was taken: it is not s's to free.
		if t.owner.CompareAndSwap(s, nil) {
			t.Close()
		}
	}
}

// Len is the number of tensors the scope owns.
func (s *Scope) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.owned)
}

// Keep hands tensors out of the scope: they survive Close and the caller
// must Close them. It returns its first argument, for chaining. Tensors of
// other scopes and nil are ignored.
func (s *Scope) Keep(ts ...*Tensor) *Tensor {
	s.mu.Lock()
	for _, t := range ts {
		if t != nil && t.owner.CompareAndSwap(s, nil) {
			delete(s.owned, t)
		}
	}
	s.mu.Unlock()
	if len(ts) == 0 {
		return nil
	}
	return ts[0]
}

// Adopt makes the scope own tensors created elsewhere (Close frees them). A
// tensor that another scope owned leaves that scope: closing it no longer
// frees the tensor. Adopting into a closed scope frees the tensors at once.
func (s *Scope) Adopt(ts ...*Tensor) {
	var late []*Tensor
	var moved []adoption
	s.mu.Lock()
	for _, t := range ts {
		switch {
		case t == nil:
		case s.closed:
			late = append(late, t)
		default:
			s.owned[t] = struct{}{}
			if prev := t.owner.Swap(s); prev != nil && prev != s {
				moved = append(moved, adoption{prev, t})
			}
		}
	}
	s.mu.Unlock()
	// The previous owners are told after s's lock is released, so that two
	// scopes adopting from each other cannot deadlock. Until then the old
	// owner may still list t, but its Close frees only the tensors whose
	// owner it still is.
	for _, m := range moved {
		m.from.forget(m.t)
	}
	for _, t := range late {
		t.Close()
	}
}

// adoption is a tensor that Adopt took from another scope.
type adoption struct {
	from *Scope
	t    *Tensor
}

// forget drops a tensor that was closed on its own, so that a long-lived
// scope does not hold on to tensors its caller already freed.
func (s *Scope) forget(t *Tensor) {
	s.mu.Lock()
	delete(s.owned, t)
	s.mu.Unlock()
}

// Fail records err as the scope's error unless one is already recorded, so
// code built on the scope can report its own failures the same sticky way.
func (s *Scope) Fail(err error) { s.fail(err) }

// fail records err as the scope's error unless one is already recorded.
func (s *Scope) fail(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.mu.Unlock()
}

// ready reports whether an operation may run: the scope is healthy and every
// input is a live tensor. Optional inputs are checked by the caller.
func (s *Scope) ready(op string, inputs ...*Tensor) bool {
	s.mu.Lock()
	err, closed := s.err, s.closed
	s.mu.Unlock()
	if err != nil {
		return false
	}
	if closed {
		s.fail(fmt.Errorf("%s: %w", op, ErrClosed))
		return false
	}
	for i, t := range inputs {
		if t.handle() == nil {
			s.fail(&Error{Op: op, Msg: fmt.Sprintf("argument %d is a nil or closed tensor", i+1)})
			return false
		}
	}
	return true
}

// wrap turns a shim result into a scope-owned tensor, or records the error.
// inputs are the tensors whose handles the call was given: wrap keeps them
// alive until the call has returned (see keepAlive).
func (s *Scope) wrap(op string, e C.ddpm_error, h C.ddpm_tensor, inputs ...*Tensor) *Tensor {
	keepAlive(inputs...)
	if err := takeError(op, e); err != nil {
		s.fail(err)
		return nil
	}
	t := newTensor(h)
	s.Adopt(t)
	return t
}

// check records a shim error of an operation without a tensor result and
// reports whether it succeeded. Like wrap, it keeps the call's tensor inputs
// alive until the call has returned.
func (s *Scope) check(op string, e C.ddpm_error, inputs ...*Tensor) bool {
	keepAlive(inputs...)
	if err := takeError(op, e); err != nil {
		s.fail(err)
		return false
	}
	return true
}

// opt returns the handle of an optional tensor argument (nil stays nil).
func opt(t *Tensor) C.ddpm_tensor { return t.handle() }

// readyOptional is ready for optional inputs: nil is allowed, a closed tensor
// is not.
func (s *Scope) readyOptional(op string, inputs ...*Tensor) bool {
	for _, t := range inputs {
		if t != nil && !s.ready(op, t) {
			return false
		}
	}
	return true
}
