package metrics

import (
	"fmt"
	"math"

	"gonum.org/v1/gonum/mat"
)

// fidOffset is the ridge added to both covariances when the first attempt
// at the trace term fails, the value pytorch-fid uses.
const fidOffset = 1e-6

// FrechetDistance returns the squared Fréchet (2-Wasserstein) distance
// between the Gaussians a and b, the FID when both come from Inception
// features (Heusel et al. 2017):
//
//	d² = |μa − μb|² + Tr(Σa + Σb − 2 (Σa Σb)^½)
//
// The trace of the matrix square root is computed without forming Σa Σb.
// With Σa = U Λ Uᵀ its eigendecomposition and Σa^½ = U Λ^½ Uᵀ, the
// products Σa Σb = Σa^½ (Σa^½ Σb) and M = (Σa^½ Σb) Σa^½ have the same
// eigenvalues (XY and YX always do, singular or not). M = Σa^½ Σb Σa^½ is
// symmetric positive semidefinite, so those eigenvalues λᵢ are real and
// non-negative, and Tr((Σa Σb)^½) = Σᵢ √λᵢ, the trace of the principal
// square root that scipy.linalg.sqrtm(Σa Σb) returns. M is similar through
// the orthogonal U to Λ^½ (Uᵀ Σb U) Λ^½, which is what is decomposed.
//
// This is more stable than pytorch-fid's sqrtm of the non-symmetric product:
// a symmetric eigensolver is backward stable and yields real eigenvalues,
// whereas a Schur-based square root of Σa Σb can pick up spurious imaginary
// parts and loses accuracy when the product is singular or ill-conditioned,
// as it is whenever there are fewer samples than dimensions. Eigenvalues
// within rounding error of zero (below d·ε times the largest), and any
// negative ones, are taken as zero, so that the zero eigenvalues of a
// singular covariance do not each add √ε to the trace.
//
// If the trace term still comes out non-finite (the eigensolver did not
// converge), everything is computed again with 1e-6·I added to both
// covariances, as pytorch-fid does when sqrtm fails. Unlike pytorch-fid,
// which adds the offset inside the square root only, the offset then enters
// Tr(Σa) and Tr(Σb) as well, so the result is the distance between the two
// regularised Gaussians (pytorch-fid's is 2·d·1e-6 lower). A result a
// rounding error below zero is reported as zero.
func FrechetDistance(a, b *Stats) (float64, error) {
	if err := a.validate(); err != nil {
		return 0, fmt.Errorf("metrics: first statistics: %w", err)
	}
	if err := b.validate(); err != nil {
		return 0, fmt.Errorf("metrics: second statistics: %w", err)
	}
	if a.Dim() != b.Dim() {
		return 0, fmt.Errorf("metrics: statistics have different dimensions: %d and %d", a.Dim(), b.Dim())
	}
	var meanTerm float64
	for i, m := range a.Mu {
		diff := m - b.Mu[i]
		meanTerm += diff * diff
	}
	trA, trB := mat.Trace(a.Sigma), mat.Trace(b.Sigma)

	covmean, ok := traceSqrtProduct(a.Sigma, b.Sigma, 0)
	offset := 0.0
	if !ok {
		offset = fidOffset
		covmean, ok = traceSqrtProduct(a.Sigma, b.Sigma, offset)
		if !ok {
			return 0, fmt.Errorf("metrics: the trace of (Σa Σb)^½ is not finite, even with %g·I added to the covariances", fidOffset)
		}
	}
	d := float64(a.Dim())
	fid := meanTerm + trA + trB + 2*d*offset - 2*covmean
	return math.Max(fid, 0), nil
}

// traceSqrtProduct returns Tr(((Σa + εI)(Σb + εI))^½), computed as the sum of
// the square roots of the eigenvalues of the symmetric (Σa+εI)^½ (Σb+εI)
// (Σa+εI)^½. It reports false when an eigendecomposition fails or the result
// is not finite.
func traceSqrtProduct(sa, sb *mat.SymDense, eps float64) (float64, bool) {
	d := sa.SymmetricDim()
	if eps != 0 {
		sa, sb = addDiag(sa, eps), addDiag(sb, eps)
	}
	var ea mat.EigenSym
	if !ea.Factorize(sa, true) {
		return 0, false
	}
	lambda := ea.Values(nil)
	var u mat.Dense
	ea.VectorsTo(&u)
	floor := eigenNoise(lambda)
	root := make([]float64, d)
	for i, l := range lambda {
		if l > floor {
			root[i] = math.Sqrt(l)
		}
	}

	// C = Uᵀ Σb U, then M = Λ^½ C Λ^½, symmetrised against rounding.
	var bu, c mat.Dense
	bu.Mul(sb, &u)
	c.Mul(u.T(), &bu)
	m := mat.NewSymDense(d, nil)
	for i := range d {
		for j := i; j < d; j++ {
			m.SetSym(i, j, root[i]*root[j]*0.5*(c.At(i, j)+c.At(j, i)))
		}
	}
	var em mat.EigenSym
	if !em.Factorize(m, false) {
		return 0, false
	}
	mu := em.Values(nil)
	floor = eigenNoise(mu)
	var tr float64
	for _, l := range mu {
		if l > floor {
			tr += math.Sqrt(l)
		}
	}
	return tr, isFinite(tr)
}

// eigenNoise returns the size below which eigenvalues of a symmetric matrix
// are indistinguishable from rounding error: d·ε·max|λ|, the backward error
// of a symmetric eigensolver. A zero eigenvalue computed as ±1e-16 would
// otherwise add √1e-16 = 1e-8 to the trace.
func eigenNoise(lambda []float64) float64 {
	var m float64
	for _, l := range lambda {
		m = math.Max(m, math.Abs(l))
	}
	const epsilon = 0x1p-52
	return float64(len(lambda)) * epsilon * m
}

// addDiag returns s + eps·I.
func addDiag(s *mat.SymDense, eps float64) *mat.SymDense {
	d := s.SymmetricDim()
	out := mat.NewSymDense(d, nil)
	out.CopySym(s)
	for i := range d {
		out.SetSym(i, i, out.At(i, i)+eps)
	}
	return out
}
