package metrics

import (
	"fmt"
	"math"

	"gonum.org/v1/gonum/mat"
)

// Stats is a Gaussian fit of a feature set: the mean Mu and the covariance
// Sigma of n samples in d dimensions, in float64. Sigma is the unbiased
// estimate (divided by n-1), as numpy.cov computes it. N is the number of
// samples, or 0 when it is not known (statistics read from a file).
type Stats struct {
	Mu    []float64
	Sigma *mat.SymDense
	N     int
}

// Dim returns the feature dimension d.
func (s *Stats) Dim() int { return len(s.Mu) }

// validate checks that s is a usable Gaussian fit.
func (s *Stats) validate() error {
	if s == nil {
		return fmt.Errorf("nil statistics")
	}
	d := len(s.Mu)
	if d == 0 {
		return fmt.Errorf("statistics have an empty mean")
	}
	if s.Sigma == nil {
		return fmt.Errorf("statistics have no covariance")
	}
	if n := s.Sigma.SymmetricDim(); n != d {
		return fmt.Errorf("mean has %d dimensions but covariance is %d×%d", d, n, n)
	}
	for _, v := range s.Mu {
		if !isFinite(v) {
			return fmt.Errorf("mean is not finite")
		}
	}
	for i := range d {
		for j := i; j < d; j++ {
			if !isFinite(s.Sigma.At(i, j)) {
				return fmt.Errorf("covariance is not finite")
			}
		}
	}
	return nil
}

// FitStats fits a Gaussian to n feature vectors of dimension d, given
// row-major in features: Mu is their mean and Sigma their covariance with
// the n-1 normalisation of numpy.cov. It needs n ≥ 2 and finite features;
// features is not modified.
//
// The covariance is accumulated from centred blocks of rows, so memory
// beyond the result is a few blocks whatever n is.
func FitStats(features []float64, n, d int) (*Stats, error) {
	if err := checkFeatures("features", features, n, d); err != nil {
		return nil, err
	}
	if n < 2 {
		return nil, fmt.Errorf("metrics: need at least 2 feature vectors for a covariance, got %d", n)
	}
	mu := make([]float64, d)
	for r := range n {
		row := features[r*d : (r+1)*d]
		for j, v := range row {
			mu[j] += v
		}
	}
	for j := range mu {
		mu[j] /= float64(n)
	}

	const block = 256
	buf := make([]float64, min(block, n)*d)
	sigma := mat.NewSymDense(d, nil)
	for lo := 0; lo < n; lo += block {
		hi := min(lo+block, n)
		c := buf[:(hi-lo)*d]
		for i, v := range features[lo*d : hi*d] {
			c[i] = v - mu[i%d]
		}
		// Σ += Cᵀ C: SymRankK adds x xᵀ, so x is the transposed block.
		sigma.SymRankK(sigma, 1, mat.NewDense(hi-lo, d, c).T())
	}
	sigma.ScaleSym(1/float64(n-1), sigma)
	return &Stats{Mu: mu, Sigma: sigma, N: n}, nil
}

// Flatten copies equal-length rows into one row-major slice, as FitStats and
// KID take them, and returns the row count n and dimension d.
func Flatten(rows [][]float64) (features []float64, n, d int, err error) {
	n = len(rows)
	if n == 0 {
		return nil, 0, 0, fmt.Errorf("metrics: no feature rows")
	}
	d = len(rows[0])
	if d == 0 {
		return nil, 0, 0, fmt.Errorf("metrics: feature rows are empty")
	}
	features = make([]float64, 0, n*d)
	for i, r := range rows {
		if len(r) != d {
			return nil, 0, 0, fmt.Errorf("metrics: feature row %d has %d values, row 0 has %d", i, len(r), d)
		}
		features = append(features, r...)
	}
	return features, n, d, nil
}

// checkFeatures validates a row-major n×d feature matrix named name.
func checkFeatures(name string, x []float64, n, d int) error {
	if n < 0 || d <= 0 {
		return fmt.Errorf("metrics: %s: invalid shape %d×%d", name, n, d)
	}
	if n > math.MaxInt/d || len(x) != n*d {
		return fmt.Errorf("metrics: %s: %d values do not make %d rows of %d", name, len(x), n, d)
	}
	for i, v := range x {
		if !isFinite(v) {
			return fmt.Errorf("metrics: %s: value %v at row %d, column %d", name, v, i/d, i%d)
		}
	}
	return nil
}

func isFinite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
