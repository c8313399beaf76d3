package metrics

import (
	"fmt"
	"math"
	"math/rand/v2"

	"gonum.org/v1/gonum/mat"
)

// Defaults for KID used by clean-fid and torch-fidelity.
const (
	DefaultKIDSubsets    = 100
	DefaultKIDSubsetSize = 1000
)

// KID returns the kernel inception distance between feature sets a (na rows)
// and b (nb rows) of dimension d, both row-major (Bińkowski et al. 2018): the
// squared maximum mean discrepancy under the polynomial kernel
//
//	k(x, y) = (x·y/d + 1)³
//
// estimated on subsets random subsets of m = min(subsetSize, na, nb) rows
// drawn without replacement from each set. Each subset gives
//
//	MMD² = Σ_{i≠j} [k(xᵢ,xⱼ) + k(yᵢ,yⱼ)] / (m(m−1)) − 2 Σ_{i,j} k(xᵢ,yⱼ) / m²
//
// whose within-set terms are unbiased, the estimate of clean-fid and
// torch-fidelity. KID returns the mean over subsets and their standard
// deviation (population form, as numpy.std; 0 for one subset). The subsets
// come from a PCG generator seeded with seed, so equal arguments give equal
// results. The usual settings are DefaultKIDSubsets and
// DefaultKIDSubsetSize. With subsets = 1 and subsetSize ≥ na = nb the one
// subset is every row of each set.
func KID(a, b []float64, na, nb, d int, subsets, subsetSize int, seed uint64) (mean, std float64, err error) {
	if err := checkFeatures("first features", a, na, d); err != nil {
		return 0, 0, err
	}
	if err := checkFeatures("second features", b, nb, d); err != nil {
		return 0, 0, err
	}
	if subsets < 1 {
		return 0, 0, fmt.Errorf("metrics: kid: need at least one subset, got %d", subsets)
	}
	m := min(subsetSize, na, nb)
	if m < 2 {
		return 0, 0, fmt.Errorf("metrics: kid: subsets of %d rows (subset size %d, sets of %d and %d) are too small; need at least 2", m, subsetSize, na, nb)
	}
	rng := rand.New(rand.NewPCG(seed, 0))
	idxA, idxB := identity(na), identity(nb)
	x, y := mat.NewDense(m, d, nil), mat.NewDense(m, d, nil)
	var kxx, kyy mat.SymDense
	var kxy mat.Dense
	mmd := make([]float64, subsets)
	for s := range mmd {
		gather(x, a, d, choose(rng, idxA, m))
		gather(y, b, d, choose(rng, idxB, m))
		kxx.SymOuterK(1, x)
		kyy.SymOuterK(1, y)
		kxy.Mul(x, y.T())
		within := offDiagonalKernelSum(&kxx, d) + offDiagonalKernelSum(&kyy, d)
		var cross float64
		for i := range m {
			for _, g := range kxy.RawRowView(i) {
				cross += polyKernel(g, d)
			}
		}
		fm := float64(m)
		mmd[s] = within/(fm*(fm-1)) - 2*cross/(fm*fm)
	}
	mean, std = meanStd(mmd)
	return mean, std, nil
}

// polyKernel is (g/d + 1)³ for a dot product g.
func polyKernel(g float64, d int) float64 {
	v := g/float64(d) + 1
	return v * v * v
}

// offDiagonalKernelSum returns Σ_{i≠j} k for the Gram matrix g.
func offDiagonalKernelSum(g *mat.SymDense, d int) float64 {
	n := g.SymmetricDim()
	var sum float64
	for i := range n {
		for j := i + 1; j < n; j++ {
			sum += polyKernel(g.At(i, j), d)
		}
	}
	return 2 * sum
}

// choose moves a uniform random m-subset of idx to its front (a partial
// Fisher–Yates shuffle) and returns it.
func choose(rng *rand.Rand, idx []int, m int) []int {
	if m == len(idx) {
		return idx
	}
	for i := range m {
		j := i + rng.IntN(len(idx)-i)
		idx[i], idx[j] = idx[j], idx[i]
	}
	return idx[:m]
}

// gather copies the rows rows of the row-major features into dst.
func gather(dst *mat.Dense, features []float64, d int, rows []int) {
	for i, r := range rows {
		dst.SetRow(i, features[r*d:(r+1)*d])
	}
}

func identity(n int) []int {
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	return idx
}

// meanStd returns the mean and the population standard deviation of v.
func meanStd(v []float64) (mean, std float64) {
	for _, x := range v {
		mean += x
	}
	mean /= float64(len(v))
	var ss float64
	for _, x := range v {
		ss += (x - mean) * (x - mean)
	}
	return mean, math.Sqrt(ss / float64(len(v)))
}
