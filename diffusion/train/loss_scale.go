package train

import (
	"math"

	"github.com/ddpm-go/ddpm/diffusion/nn"
	"github.com/ddpm-go/ddpm/torch"
)

// lossScaler is the dynamic loss scale of float16 training (Micikevicius et
// al. 2018, as torch.cuda.amp.GradScaler): the loss is multiplied by scale
// before backward so small gradients survive float16; gradients are divided
// by it before the update. A step whose gradients overflow is skipped and
// halves the scale; growthInterval good steps in a row double it.
type lossScaler struct {
	scale     float64
	goodSteps int
}

const (
	initialLossScale = 65536
	growthInterval   = 2000
)

func newLossScaler() *lossScaler { return &lossScaler{scale: initialLossScale} }

// unscale divides every gradient by the scale, in place.
func (l *lossScaler) unscale(params []nn.Param) error {
	s := torch.NewScope(torch.NoGrad)
	defer s.Close()
	for _, p := range params {
		if g := s.Grad(p.T); g != nil {
			s.MulScalarInPlace(g, 1/l.scale)
		}
	}
	return s.Err()
}

// update adjusts the scale from the gradient norm and reports whether the
// step's gradients are usable.
func (l *lossScaler) update(gradNorm float64) bool {
	if math.IsNaN(gradNorm) || math.IsInf(gradNorm, 0) {
		l.scale /= 2
		l.goodSteps = 0
		return false
	}
	l.goodSteps++
	if l.goodSteps == growthInterval {
		l.scale *= 2
		l.goodSteps = 0
	}
	return true
}
