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
// square root that scipy.linalg.sqrtm(Σa Σb) returns.
//
// The same holds for Fᵀ Σb F with any factor Σa = F Fᵀ, since Σa Σb =
// F (Fᵀ Σb) shares its eigenvalues with (Fᵀ Σb) F. F = U Λ^½ gives a matrix
// orthogonally similar to Σa^½ Σb Σa^½; the Cholesky factor gives the same
// eigenvalues at a fraction of the cost, because no eigenvectors are needed.
// So when Σa (or else Σb, the roles being symmetric) is positive definite
// and well conditioned, its Cholesky factor is used; otherwise, as for the
// singular covariances of fewer samples than dimensions, F = U Λ^½ with the
// eigenvalues within rounding error of zero (below d·ε times the largest)
// dropped, so that each of them does not add √ε to the trace.
//
// This is more stable than pytorch-fid's sqrtm of the non-symmetric product:
// a symmetric eigensolver is backward stable and yields real eigenvalues,
// whereas a Schur-based square root of Σa Σb can pick up spurious imaginary
// parts and loses accuracy when the product is singular or ill-conditioned,
// as it is whenever there are fewer samples than dimensions. Eigenvalues of
// the symmetric matrix within rounding error of zero, and any negative ones,
// are taken as zero.
//
// If the trace term comes out non-finite (an eigensolver did not converge),
// everything is computed again with 1e-6·I added to both covariances, as
// pytorch-fid does when sqrtm fails. Unlike pytorch-fid, which adds the
// offset inside the square root only, the offset then enters Tr(Σa) and
// Tr(Σb) as well, so the result is the distance between the two regularised
// Gaussians (pytorch-fid's is 2·d·1e-6 lower). A result a rounding error
// below zero is reported as zero.
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

// traceSqrtProduct returns Tr(((Σa + εI)(Σb + εI))^½) as the sum of the
// square roots of the eigenvalues of Fᵀ S F, where F Fᵀ is one covariance
// and S the other (see FrechetDistance). It reports false when a
// decomposition fails or the result is not finite.
func traceSqrtProduct(sa, sb *mat.SymDense, eps float64) (float64, bool) {
	if eps != 0 {
		sa, sb = addDiag(sa, eps), addDiag(sb, eps)
	}
	if f := choleskyFactor(sa); f != nil {
		return traceSqrtCongruence(f, sb)
	}
	if f := choleskyFactor(sb); f != nil {
		return traceSqrtCongruence(f, sa)
	}
	f, ok := eigenFactor(sa)
	if !ok {
		return 0, false
	}
	if f == nil {
		return 0, true // Σa = 0
	}
	return traceSqrtCongruence(f, sb)
}

// choleskyFactor returns the Cholesky factor L of s = L Lᵀ as a dense
// matrix, or nil when s is not positive definite or so ill-conditioned that
// some of its eigenvalues may be at rounding-error level, where eigenFactor
// is the accurate choice.
func choleskyFactor(s *mat.SymDense) *mat.Dense {
	var c mat.Cholesky
	if !c.Factorize(s) {
		return nil
	}
	d := s.SymmetricDim()
	if c.Cond() > 0.01/(float64(d)*epsilon) {
		return nil
	}
	var l mat.TriDense
	c.LTo(&l)
	return mat.DenseCopyOf(&l)
}

// eigenFactor returns F = U Λ^½ for s = U Λ Uᵀ, keeping only the columns of
// eigenvalues above rounding-error level, so F is d×r for s of numerical
// rank r. F is nil when r is 0. It reports false when the eigensolver fails.
func eigenFactor(s *mat.SymDense) (*mat.Dense, bool) {
	var e mat.EigenSym
	if !e.Factorize(s, true) {
		return nil, false
	}
	lambda := e.Values(nil)
	var u mat.Dense
	e.VectorsTo(&u)
	floor := eigenNoise(lambda)
	var keep []int
	for i, l := range lambda {
		if l > floor {
			keep = append(keep, i)
		}
	}
	if len(keep) == 0 {
		return nil, true
	}
	d := s.SymmetricDim()
	f := mat.NewDense(d, len(keep), nil)
	for k, i := range keep {
		root := math.Sqrt(lambda[i])
		for r := range d {
			f.Set(r, k, u.At(r, i)*root)
		}
	}
	return f, true
}

// traceSqrtCongruence returns Σᵢ √μᵢ over the eigenvalues μ of Fᵀ S F,
// taking those within rounding error of zero, or negative, as zero.
func traceSqrtCongruence(f *mat.Dense, s *mat.SymDense) (float64, bool) {
	_, k := f.Dims()
	var sf, c mat.Dense
	sf.Mul(s, f)
	c.Mul(f.T(), &sf)
	m := mat.NewSymDense(k, nil)
	for i := range k {
		for j := i; j < k; j++ {
			m.SetSym(i, j, 0.5*(c.At(i, j)+c.At(j, i)))
		}
	}
	var e mat.EigenSym
	if !e.Factorize(m, false) {
		return 0, false
	}
	mu := e.Values(nil)
	floor := eigenNoise(mu)
	var tr float64
	for _, l := range mu {
		if l > floor {
			tr += math.Sqrt(l)
		}
	}
	return tr, isFinite(tr)
}

// epsilon is the float64 machine epsilon.
const epsilon = 0x1p-52

// eigenNoise returns the size below which eigenvalues of a symmetric matrix
// are indistinguishable from rounding error: d·ε·max|λ|, the backward error
// of a symmetric eigensolver. A zero eigenvalue computed as ±1e-16 would
// otherwise add √1e-16 = 1e-8 to the trace.
func eigenNoise(lambda []float64) float64 {
	var m float64
	for _, l := range lambda {
		m = math.Max(m, math.Abs(l))
	}
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
