package train

import (
	"math"
	"math/rand/v2"
)

// lossHistory is the loss-second-moment resampler of improved DDPM: it keeps
// the last historyLen losses of every timestep and, once every timestep has
// a full history, draws t with p_t ∝ sqrt(E[L_t²]), mixed with a little of
// the uniform distribution so no timestep starves.
type lossHistory struct {
	T       int
	losses  []float64 // T x historyLen ring buffers
	counts  []int64   // losses seen per timestep (saturates the ring)
	uniform float64   // weight of the uniform mixture
}

const historyLen = 10

func newLossHistory(T int) *lossHistory {
	return &lossHistory{T: T, losses: make([]float64, T*historyLen), counts: make([]int64, T), uniform: 0.001}
}

func (h *lossHistory) warm() bool {
	for _, c := range h.counts {
		if c < historyLen {
			return false
		}
	}
	return true
}

// weights is p_t: uniform until every timestep has a full history.
func (h *lossHistory) weights() []float64 {
	p := make([]float64, h.T)
	if !h.warm() {
		for i := range p {
			p[i] = 1 / float64(h.T)
		}
		return p
	}
	var sum float64
	for t := range p {
		var sq float64
		for _, l := range h.losses[t*historyLen : (t+1)*historyLen] {
			sq += l * l
		}
		p[t] = math.Sqrt(sq / historyLen)
		sum += p[t]
	}
	for t := range p {
		p[t] = p[t]/sum*(1-h.uniform) + h.uniform/float64(h.T)
	}
	return p
}

// draw samples n timesteps from p and returns them with their importance
// weights 1/(T p_t), which keep the weighted loss an unbiased estimate of
// the uniform objective.
func (h *lossHistory) draw(rng *rand.Rand, n int) ([]int64, []float64) {
	p := h.weights()
	cdf := make([]float64, len(p))
	var acc float64
	for i, v := range p {
		acc += v
		cdf[i] = acc
	}
	ts := make([]int64, n)
	ws := make([]float64, n)
	for i := range ts {
		u := rng.Float64() * acc
		lo, hi := 0, len(cdf)-1
		for lo < hi {
			mid := (lo + hi) / 2
			if cdf[mid] < u {
				lo = mid + 1
			} else {
				hi = mid
			}
		}
		ts[i] = int64(lo)
		ws[i] = 1 / (float64(h.T) * p[lo])
	}
	return ts, ws
}

// record adds the (unweighted) losses seen at timesteps ts.
func (h *lossHistory) record(ts []int64, losses []float64) {
	for i, t := range ts {
		slot := h.counts[t] % historyLen
		h.losses[int(t)*historyLen+int(slot)] = losses[i]
		h.counts[t]++
	}
}
