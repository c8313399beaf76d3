package torch

// #include "ddpm_torch.h"
import "C"

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
)

// Generator is a seeded random-number generator for one device. The same seed
// gives the same numbers. A Generator may be shared by goroutines (libtorch
// serialises its use) but the order of draws then decides who gets which.
// Close frees it; the garbage collector frees a forgotten one only as a
// backstop, as for tensors.
type Generator struct {
	mu      sync.Mutex
	h       C.ddpm_generator
	device  Device
	cleanup runtime.Cleanup
}

// gcFreedGenerators counts the generators freed by the garbage-collector
// backstop.
var gcFreedGenerators atomic.Int64

func freeGenerator(h C.ddpm_generator) {
	C.ddpm_generator_free(h)
	gcFreedGenerators.Add(1)
}

// NewGenerator returns a generator for dev seeded with seed.
func NewGenerator(seed uint64, dev Device) (*Generator, error) {
	var h C.ddpm_generator
	if err := takeError("generator", C.ddpm_generator_new(C.uint64_t(seed), dev.cType(), dev.cIndex(), &h)); err != nil {
		return nil, err
	}
	g := &Generator{h: h, device: dev}
	g.cleanup = runtime.AddCleanup(g, freeGenerator, h)
	return g, nil
}

// Device is the device the generator draws for.
func (g *Generator) Device() Device { return g.device }

// Close frees the generator. Safe to call more than once.
func (g *Generator) Close() {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.h != nil {
		g.cleanup.Stop()
		C.ddpm_generator_free(g.h)
		g.h = nil
	}
}

// use runs f with the generator's handle (NULL for a nil generator, which
// means libtorch's global one) while holding it, so Close cannot free it
// mid-call. A closed generator is an error, never a silent fallback to the
// global generator.
func (g *Generator) use(f func(C.ddpm_generator) C.ddpm_error) error {
	if g == nil {
		return takeError("rand", f(nil))
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.h == nil {
		return fmt.Errorf("generator: %w", ErrClosed)
	}
	err := takeError("rand", f(g.h))
	runtime.KeepAlive(g)
	return err
}

// State is the generator's complete state, for checkpoints.
func (g *Generator) State() ([]byte, error) {
	if g == nil {
		return nil, ErrClosed
	}
	var h C.ddpm_tensor
	if err := g.use(func(gh C.ddpm_generator) C.ddpm_error { return C.ddpm_generator_get_state(gh, &h) }); err != nil {
		return nil, err
	}
	t := newTensor(h)
	defer t.Close()
	return t.Bytes()
}

// SetState restores a state returned by State.
func (g *Generator) SetState(state []byte) error {
	if g == nil {
		return ErrClosed
	}
	s := NewScope(NoGrad)
	defer s.Close()
	t := s.FromBytes(state, Uint8, int64(len(state)))
	if err := s.Err(); err != nil {
		return err
	}
	err := g.use(func(gh C.ddpm_generator) C.ddpm_error { return C.ddpm_generator_set_state(gh, t.h) })
	keepAlive(t)
	return err
}

// draw runs a random op that creates one tensor with the generator held;
// inputs are the tensors whose handles f passes to the shim.
func (s *Scope) draw(op string, g *Generator, f func(C.ddpm_generator, *C.ddpm_tensor) C.ddpm_error, inputs ...*Tensor) *Tensor {
	var out C.ddpm_tensor
	err := g.use(func(gh C.ddpm_generator) C.ddpm_error { return f(gh, &out) })
	keepAlive(inputs...)
	if err != nil {
		if te, ok := err.(*Error); ok {
			te.Op = op
		}
		s.fail(err)
		return nil
	}
	return s.wrap(op, nil, out)
}

func (s *Scope) random(kind C.int32_t, shape []int64, dt DType, dev Device, g *Generator) *Tensor {
	if !s.ready("rand") {
		return nil
	}
	p, n := int64s(shape)
	return s.draw("rand", g, func(gh C.ddpm_generator, out *C.ddpm_tensor) C.ddpm_error {
		return C.ddpm_rand(s.mode, kind, p, n, C.int32_t(dt), dev.cType(), dev.cIndex(), gh, out)
	})
}

// Randn draws from N(0, 1). g may be nil for libtorch's global generator.
func (s *Scope) Randn(shape []int64, dt DType, dev Device, g *Generator) *Tensor {
	return s.random(C.DDPM_RAND_NORMAL, shape, dt, dev, g)
}

// Rand draws from U[0, 1). g may be nil for libtorch's global generator.
func (s *Scope) Rand(shape []int64, dt DType, dev Device, g *Generator) *Tensor {
	return s.random(C.DDPM_RAND_UNIFORM, shape, dt, dev, g)
}

// RandInt draws int64 integers uniform in [low, high).
func (s *Scope) RandInt(low, high int64, shape []int64, dev Device, g *Generator) *Tensor {
	if !s.ready("randint") {
		return nil
	}
	p, n := int64s(shape)
	return s.draw("randint", g, func(gh C.ddpm_generator, out *C.ddpm_tensor) C.ddpm_error {
		return C.ddpm_randint(s.mode, C.int64_t(low), C.int64_t(high), p, n, dev.cType(), dev.cIndex(), gh, out)
	})
}

// Bernoulli draws 0/1 with the per-element probabilities p.
func (s *Scope) Bernoulli(p *Tensor, g *Generator) *Tensor {
	if !s.ready("bernoulli", p) {
		return nil
	}
	return s.draw("bernoulli", g, func(gh C.ddpm_generator, out *C.ddpm_tensor) C.ddpm_error {
		return C.ddpm_bernoulli(s.mode, p.h, gh, out)
	}, p)
}

// Dropout zeroes elements with probability p and scales the survivors by
// 1/(1-p) when train is true; it returns a copy of x otherwise.
func (s *Scope) Dropout(x *Tensor, p float64, train bool, g *Generator) *Tensor {
	if !s.ready("dropout", x) {
		return nil
	}
	return s.draw("dropout", g, func(gh C.ddpm_generator, out *C.ddpm_tensor) C.ddpm_error {
		return C.ddpm_dropout(s.mode, x.h, C.double(p), cBool(train), gh, out)
	}, x)
}
