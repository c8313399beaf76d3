package sampler

import (
	"errors"
	"fmt"
	"slices"

	"github.com/ddpm-go/ddpm/torch"
)

// forward is the model's output at timestep t for the batch x, in the
// model's own terms (its Target). With classifier-free guidance (Ho &
// Salimans 2022, eq. 6 and Algorithm 2) it runs the conditional and the
// unconditional branch in one call on the batch [x; x] with labels
// [c; ∅] and combines them as
//
//	out = out(x, t, ∅) + w (out(x, t, c) - out(x, t, ∅)).
//
// The guidance formula is written for ε, but every target is affine in the
// model output at fixed x_t and t (SplitPrediction), and the weights of the
// combination sum to 1, so combining raw outputs gives exactly the guided ε
// (and the x0 and v consistent with it) for any target.
func (r *run) forward(s *torch.Scope, x *torch.Tensor, t int) *torch.Tensor {
	n := r.shape[0]
	if !r.cfg.guided() {
		out := r.model.Forward(s, x, s.Full([]int64{n}, float64(t), torch.Int64, r.device), r.cfg.Labels)
		return r.checkOutput(s, out, x, r.shape)
	}
	xx := s.Cat([]*torch.Tensor{x, x}, 0)
	tt := s.Full([]int64{2 * n}, float64(t), torch.Int64, r.device)
	null := s.Full([]int64{n}, float64(r.cfg.NullLabel), torch.Int64, r.device)
	labels := s.Cat([]*torch.Tensor{r.cfg.Labels, null}, 0)
	if s.Err() != nil {
		return nil
	}
	batch := slices.Clone(r.shape)
	batch[0] = 2 * n
	out := r.checkOutput(s, r.model.Forward(s, xx, tt, labels), xx, batch)
	if out == nil {
		return nil
	}
	parts := s.Split(out, []int64{n, n}, 0)
	if s.Err() != nil {
		return nil
	}
	cond, uncond := parts[0], parts[1]
	return s.Add(uncond, s.MulScalar(s.Sub(cond, uncond), r.cfg.Guidance))
}

// checkOutput records an error in s unless out is a tensor of the given
// shape, and returns out in the sample's dtype. A model that hands back its input x unchanged
// gets a copy, so that the sampler never frees or returns the caller's
// tensor.
func (r *run) checkOutput(s *torch.Scope, out, x *torch.Tensor, shape []int64) *torch.Tensor {
	if s.Err() != nil {
		return nil
	}
	if out == nil {
		s.Fail(errors.New("model returned no tensor"))
		return nil
	}
	m, err := out.Meta()
	if err != nil {
		s.Fail(fmt.Errorf("model output: %w", err))
		return nil
	}
	if !slices.Equal(m.Shape, shape) {
		s.Fail(fmt.Errorf("model output has shape %v, want %v", m.Shape, shape))
		return nil
	}
	if out == x {
		out = s.Clone(out)
	}
	if m.DType != r.dtype {
		out = s.ToDType(out, r.dtype)
	}
	return out
}
