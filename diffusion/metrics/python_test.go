package metrics

import (
	"math"
	"math/rand/v2"
)

// gaussianFeatures returns n rows of d correlated Gaussian features,
// x = shift + z·L with z standard normal and L a fixed random mixing matrix.
func gaussianFeatures(rng *rand.Rand, n, d int, shift float64) []float64 {
	mix := make([]float64, d*d)
	for i := range mix {
		mix[i] = rng.NormFloat64() / math.Sqrt(float64(d))
	}
	x := make([]float64, n*d)
	z := make([]float64, d)
	for r := range n {
		for k := range z {
			z[k] = rng.NormFloat64()
		}
		for j := range d {
			v := shift
			for k, zk := range z {
				v += zk * mix[k*d+j]
			}
			x[r*d+j] = v
		}
	}
	return x
}

// closeRel reports whether got is within tol of want, relative to
// max(|want|, scale).
func closeRel(got, want, tol, scale float64) bool {
	return math.Abs(got-want) <= tol*math.Max(math.Abs(want), scale)
}
