package metrics

import (
	"fmt"
	"math"
)

// DefaultISSplits is the number of splits the Inception Score is usually
// reported over.
const DefaultISSplits = 10

// probSumTolerance is how far a row of class probabilities may sum from 1;
// softmax outputs computed in float32 are well within it.
const probSumTolerance = 1e-3

// InceptionScore returns the Inception Score of n samples (Salimans et al.
// 2016) from their class probabilities p(y|x), given row-major with classes
// columns (softmax outputs):
//
//	IS = exp(E_x KL(p(y|x) ‖ p(y)))
//
// where p(y) is the mean of p(y|x) over the samples. As in the original
// implementation the samples are cut, in order, into splits contiguous parts
// (part i holds rows i·n/splits up to (i+1)·n/splits), the score is computed
// on each, and the mean and population standard deviation of the parts are
// returned. Terms with p(y|x) = 0 contribute 0, the limit of p log p.
//
// Every row must be non-negative and sum to 1 within 1e-3; n must be at
// least splits. The usual number of splits is DefaultISSplits.
func InceptionScore(probs []float64, n, classes, splits int) (mean, std float64, err error) {
	if err := checkFeatures("probabilities", probs, n, classes); err != nil {
		return 0, 0, err
	}
	if splits < 1 {
		return 0, 0, fmt.Errorf("metrics: inception score: need at least one split, got %d", splits)
	}
	if n < splits {
		return 0, 0, fmt.Errorf("metrics: inception score: %d samples cannot fill %d splits", n, splits)
	}
	for r := range n {
		var sum float64
		for c, p := range probs[r*classes : (r+1)*classes] {
			if p < 0 {
				return 0, 0, fmt.Errorf("metrics: inception score: probability %v < 0 at row %d, class %d", p, r, c)
			}
			sum += p
		}
		if math.Abs(sum-1) > probSumTolerance {
			return 0, 0, fmt.Errorf("metrics: inception score: row %d sums to %v, not 1; pass softmax outputs, not logits", r, sum)
		}
	}
	scores := make([]float64, splits)
	marginal := make([]float64, classes)
	for s := range scores {
		lo, hi := s*n/splits, (s+1)*n/splits
		part := probs[lo*classes : hi*classes]
		clear(marginal)
		for i, p := range part {
			marginal[i%classes] += p
		}
		rows := float64(hi - lo)
		for c := range marginal {
			marginal[c] /= rows
		}
		var kl float64
		for i, p := range part {
			if p > 0 {
				kl += p * (math.Log(p) - math.Log(marginal[i%classes]))
			}
		}
		scores[s] = math.Exp(kl / rows)
	}
	mean, std = meanStd(scores)
	return mean, std, nil
}
