package optim

import (
	"fmt"

	"github.com/ddpm-go/ddpm/diffusion/nn"
	"github.com/ddpm-go/ddpm/torch"
)

// EMA keeps an exponential moving average of the weights, outside the
// training graph (Ho et al. 2020 sample with the EMA weights, decay 0.9999).
//
// With warm-up the decay of update n is min(decay, (1+n)/(10+n)), as in
// TensorFlow's ExponentialMovingAverage with num_updates, so early averages
// are not dominated by the random initial weights.
type EMA struct {
	decay   float64
	warmup  bool
	shadow  []nn.Param
	updates int64
}

// NewEMA copies params (detached, not requiring grad) as the starting average.
func NewEMA(params []nn.Param, decay float64, warmup bool) (*EMA, error) {
	if !(decay >= 0 && decay <= 1) {
		return nil, fmt.Errorf("optim: ema decay %g out of range [0, 1]", decay)
	}
	s := torch.NewScope(torch.NoGrad)
	defer s.Close()
	e := &EMA{decay: decay, warmup: warmup}
	for _, p := range params {
		e.shadow = append(e.shadow, nn.Param{Name: p.Name, T: s.Keep(s.Clone(s.Detach(p.T)))})
	}
	if err := s.Err(); err != nil {
		nn.CloseParams(e.shadow)
		return nil, err
	}
	return e, nil
}

// Decay is the decay the next update will use.
func (e *EMA) Decay() float64 {
	if !e.warmup {
		return e.decay
	}
	n := float64(e.updates + 1)
	return min(e.decay, (1+n)/(10+n))
}

// Update moves the average toward params: avg = d avg + (1-d) param.
func (e *EMA) Update(params []nn.Param) error {
	if err := torch.EMAUpdate(nn.Tensors(e.shadow), nn.Tensors(params), e.Decay()); err != nil {
		return err
	}
	e.updates++
	return nil
}

// Updates is the number of updates so far (saved with checkpoints).
func (e *EMA) Updates() int64 { return e.updates }

// SetUpdates restores the update count of a checkpoint.
func (e *EMA) SetUpdates(n int64) { e.updates = n }

// Params are the averaged weights, named like the model's.
func (e *EMA) Params() []nn.Param { return e.shadow }

// Close frees the averaged weights.
func (e *EMA) Close() { nn.CloseParams(e.shadow) }
