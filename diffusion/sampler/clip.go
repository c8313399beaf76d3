package sampler

import (
	"fmt"
	"math"
	"slices"

	"github.com/ddpm-go/ddpm/torch"
)

// dynamicThreshold is the dynamic thresholding of Saharia et al. 2022
// (Imagen, section 2.3) applied to a batch of predicted clean samples x0:
// for each sample, s is the percentile p of |x0| over all its elements,
// raised to at least 1, and the sample becomes clamp(x0, -s, s)/s. Where
// no element exceeds 1 the sample is unchanged; otherwise it is pulled back
// into [-1, 1] without the saturation of plain clipping.
//
// The percentiles are computed on the host (libtorch's quantile is not
// part of the torch package), which costs one copy of x0 per step.
func dynamicThreshold(s *torch.Scope, x0 *torch.Tensor, p float64) *torch.Tensor {
	m, err := x0.Meta()
	if err != nil {
		s.Fail(fmt.Errorf("dynamic thresholding: %w", err))
		return nil
	}
	n := m.Shape[0]
	flat := s.ToDType(s.Reshape(s.Abs(x0), n, -1), torch.Float64)
	if s.Err() != nil {
		return nil
	}
	v, err := flat.Float64s()
	if err != nil {
		s.Fail(fmt.Errorf("dynamic thresholding: %w", err))
		return nil
	}
	per := len(v) / int(n)
	thr := make([]float64, n)
	for i := range thr {
		thr[i] = math.Max(quantile(v[i*per:(i+1)*per], p), 1)
	}
	shape := make([]int64, len(m.Shape))
	for i := range shape {
		shape[i] = 1
	}
	shape[0] = n
	st := s.FromFloat64s(thr, shape...)
	if m.Device != torch.CPU {
		st = s.To(st, m.Device)
	}
	st = s.ToDType(st, m.DType)
	return s.Div(s.Minimum(s.Maximum(x0, s.Neg(st)), st), st)
}

// quantile is the q-quantile of v with linear interpolation between
// order statistics (numpy's and torch's default). It sorts a copy of v.
func quantile(v []float64, q float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	sorted := slices.Clone(v)
	slices.Sort(sorted)
	pos := q * float64(len(sorted)-1)
	lo := int(math.Floor(pos))
	if lo >= len(sorted)-1 {
		return sorted[len(sorted)-1]
	}
	frac := pos - float64(lo)
	return sorted[lo] + frac*(sorted[lo+1]-sorted[lo])
}
