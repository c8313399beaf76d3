package torch

// #include "ddpm_torch.h"
import "C"

// Backward computes the gradients of the one-element tensor t with respect to
// every leaf that requires grad, accumulating them into their Grad. It always
// runs with grad mode on, whatever the scope's mode.
func (s *Scope) Backward(t *Tensor) { s.backward(t, nil, false) }

// BackwardWith backpropagates a non-scalar t with the upstream gradient grad;
// retain keeps the graph for another backward pass.
func (s *Scope) BackwardWith(t, grad *Tensor, retain bool) { s.backward(t, grad, retain) }

func (s *Scope) backward(t, grad *Tensor, retain bool) {
	if s.ready("backward", t) && s.readyOptional("backward", grad) {
		s.check("backward", C.ddpm_backward(t.h, opt(grad), cBool(retain)), t, grad)
	}
}

// Grad returns t's accumulated gradient (sharing its storage), or nil when t
// has none yet.
func (s *Scope) Grad(t *Tensor) *Tensor {
	if !s.ready("grad", t) {
		return nil
	}
	var out C.ddpm_tensor
	var defined C.int32_t
	if !s.check("grad", C.ddpm_grad(t.h, &out, &defined), t) || defined == 0 {
		return nil
	}
	g := newTensor(out)
	s.Adopt(g)
	return g
}
