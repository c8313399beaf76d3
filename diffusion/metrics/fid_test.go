package metrics

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/internal/pyref"
	"gonum.org/v1/gonum/mat"
)

// randomSPD returns a random symmetric positive definite d×d matrix.
func randomSPD(rng *rand.Rand, d int) *mat.SymDense {
	a := mat.NewDense(d, d, nil)
	for i := range d {
		for j := range d {
			a.Set(i, j, rng.NormFloat64())
		}
	}
	s := mat.NewSymDense(d, nil)
	s.SymOuterK(1/float64(d), a)
	for i := range d {
		s.SetSym(i, i, s.At(i, i)+0.1)
	}
	return s
}

// randomRotation returns a random d×d orthogonal matrix.
func randomRotation(rng *rand.Rand, d int) *mat.Dense {
	var e mat.EigenSym
	if !e.Factorize(randomSPD(rng, d), true) {
		panic("eigendecomposition failed")
	}
	var q mat.Dense
	e.VectorsTo(&q)
	return &q
}

// diagStats returns Stats with mean mu and covariance Q·diag(v)·Qᵀ (diag(v)
// when q is nil).
func diagStats(mu, v []float64, q *mat.Dense) *Stats {
	d := len(v)
	s := mat.NewSymDense(d, nil)
	for i := range d {
		for j := i; j < d; j++ {
			var x float64
			if q == nil {
				if i == j {
					x = v[i]
				}
			} else {
				for k := range d {
					x += q.At(i, k) * v[k] * q.At(j, k)
				}
			}
			s.SetSym(i, j, x)
		}
	}
	return &Stats{Mu: mu, Sigma: s}
}

func TestFrechetDistanceEqualGaussians(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, d := range []int{1, 2, 16, 64} {
		mu := make([]float64, d)
		for i := range mu {
			mu[i] = rng.NormFloat64()
		}
		s := &Stats{Mu: mu, Sigma: randomSPD(rng, d)}
		got, err := FrechetDistance(s, s)
		if err != nil {
			t.Fatal(err)
		}
		if math.Abs(got) > 1e-9 {
			t.Errorf("d=%d: FID of a Gaussian with itself = %g, want 0", d, got)
		}
	}
}

// diagonalFID is the closed form for covariances diagonal in one basis.
func diagonalFID(muA, muB, va, vb []float64) float64 {
	var f float64
	for i := range muA {
		f += (muA[i] - muB[i]) * (muA[i] - muB[i])
		f += va[i] + vb[i] - 2*math.Sqrt(va[i]*vb[i])
	}
	return f
}

func TestFrechetDistanceClosedForms(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const d = 12
	muA, muB := make([]float64, d), make([]float64, d)
	va, vb := make([]float64, d), make([]float64, d)
	for i := range d {
		muA[i], muB[i] = rng.NormFloat64(), rng.NormFloat64()
		va[i], vb[i] = 0.1+rng.ExpFloat64(), 0.1+rng.ExpFloat64()
	}
	q := randomRotation(rng, d)
	// A singular pair: variances zero in different coordinates.
	zA, zB := append([]float64(nil), va...), append([]float64(nil), vb...)
	zA[0], zA[1], zB[1], zB[2] = 0, 0, 0, 0

	tests := []struct {
		name string
		a, b *Stats
		want float64
	}{
		{"one dimension by hand", diagStats([]float64{1}, []float64{4}, nil), diagStats([]float64{3}, []float64{9}, nil), 5},
		{"diagonal", diagStats(muA, va, nil), diagStats(muB, vb, nil), diagonalFID(muA, muB, va, vb)},
		{"commuting, rotated", diagStats(muA, va, q), diagStats(muB, vb, q), diagonalFID(muA, muB, va, vb)},
		{"singular diagonal by hand", diagStats([]float64{1, 0, 0}, []float64{1, 0, 4}, nil), diagStats([]float64{0, 2, 0}, []float64{0, 2, 4}, nil), 5 + 11 - 2*4},
		{"singular, rotated", diagStats(muA, zA, q), diagStats(muB, zB, q), diagonalFID(muA, muB, zA, zB)},
		{"one singular", diagStats(muA, zA, q), diagStats(muB, vb, q), diagonalFID(muA, muB, zA, vb)},
		{"zero covariances", diagStats([]float64{1, 2}, []float64{0, 0}, nil), diagStats([]float64{4, 6}, []float64{0, 0}, nil), 25},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := FrechetDistance(tt.a, tt.b)
			if err != nil {
				t.Fatal(err)
			}
			if !closeRel(got, tt.want, 1e-9, 1) {
				t.Errorf("FID = %.15g, want %.15g", got, tt.want)
			}
			back, err := FrechetDistance(tt.b, tt.a)
			if err != nil {
				t.Fatal(err)
			}
			if !closeRel(back, tt.want, 1e-9, 1) {
				t.Errorf("FID with arguments swapped = %.15g, want %.15g", back, tt.want)
			}
		})
	}
}

// Rank-one covariances v vᵀ and w wᵀ: Σa Σb = (v·w) v wᵀ has the single
// non-zero eigenvalue (v·w)², so FID = |Δμ|² + |v|² + |w|² − 2|v·w|.
func TestFrechetDistanceRankOne(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	const d = 20
	v, w := make([]float64, d), make([]float64, d)
	for i := range d {
		v[i], w[i] = rng.NormFloat64(), rng.NormFloat64()
	}
	sa, sb := mat.NewSymDense(d, nil), mat.NewSymDense(d, nil)
	sa.SymRankOne(sa, 1, mat.NewVecDense(d, v))
	sb.SymRankOne(sb, 1, mat.NewVecDense(d, w))
	vw := mat.Dot(mat.NewVecDense(d, v), mat.NewVecDense(d, w))
	want := mat.Dot(mat.NewVecDense(d, v), mat.NewVecDense(d, v)) + mat.Dot(mat.NewVecDense(d, w), mat.NewVecDense(d, w)) - 2*math.Abs(vw)
	got, err := FrechetDistance(&Stats{Mu: make([]float64, d), Sigma: sa}, &Stats{Mu: make([]float64, d), Sigma: sb})
	if err != nil {
		t.Fatal(err)
	}
	if !closeRel(got, want, 1e-9, 1) {
		t.Errorf("FID = %.15g, want %.15g", got, want)
	}
}

// With ε·I added, Tr(((Σ+εI)(Σ+εI))^½) = Tr(Σ) + d·ε.
func TestTraceSqrtProductOffset(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	const d = 10
	s := randomSPD(rng, d)
	got, ok := traceSqrtProduct(s, s, fidOffset)
	if !ok {
		t.Fatal("trace not finite")
	}
	if want := mat.Trace(s) + d*fidOffset; !closeRel(got, want, 1e-12, 1) {
		t.Errorf("trace = %.15g, want %.15g", got, want)
	}
}

// The Cholesky and eigendecomposition factors give the same trace.
func TestTraceSqrtFactors(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	for _, d := range []int{1, 5, 40} {
		sa, sb := randomSPD(rng, d), randomSPD(rng, d)
		l := choleskyFactor(sa)
		if l == nil {
			t.Fatalf("d=%d: no Cholesky factor of a well-conditioned matrix", d)
		}
		f, ok := eigenFactor(sa)
		if !ok || f == nil {
			t.Fatalf("d=%d: no eigendecomposition factor", d)
		}
		byCholesky, ok1 := traceSqrtCongruence(l, sb)
		byEigen, ok2 := traceSqrtCongruence(f, sb)
		if !ok1 || !ok2 || !closeRel(byCholesky, byEigen, 1e-12, 0) {
			t.Errorf("d=%d: trace %.15g with the Cholesky factor, %.15g with U·Λ^½", d, byCholesky, byEigen)
		}
	}
	singular := diagStats([]float64{0, 0, 0}, []float64{1, 0, 2}, nil).Sigma
	if choleskyFactor(singular) != nil {
		t.Error("Cholesky factor of a singular matrix")
	}
	if f, ok := eigenFactor(singular); !ok || f == nil {
		t.Error("no eigendecomposition factor of a singular matrix")
	} else if r, c := f.Dims(); r != 3 || c != 2 {
		t.Errorf("factor of a rank-2 matrix is %d×%d, want 3×2", r, c)
	}
}

func TestFrechetDistanceErrors(t *testing.T) {
	good := diagStats([]float64{0, 0}, []float64{1, 1}, nil)
	nan := diagStats([]float64{0, math.NaN()}, []float64{1, 1}, nil)
	infSigma := diagStats([]float64{0, 0}, []float64{1, math.Inf(1)}, nil)
	tests := []struct {
		name string
		a, b *Stats
		want string
	}{
		{"dimension mismatch", good, diagStats([]float64{0, 0, 0}, []float64{1, 1, 1}, nil), "different dimensions: 2 and 3"},
		{"nil", good, nil, "second statistics: nil statistics"},
		{"no covariance", &Stats{Mu: []float64{1}}, good, "no covariance"},
		{"covariance of the wrong size", &Stats{Mu: []float64{1}, Sigma: mat.NewSymDense(2, nil)}, good, "mean has 1 dimensions but covariance is 2×2"},
		{"empty", &Stats{Sigma: mat.NewSymDense(1, nil)}, good, "empty mean"},
		{"nan mean", nan, good, "mean is not finite"},
		{"inf covariance", good, infSigma, "covariance is not finite"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := FrechetDistance(tt.a, tt.b)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "metrics: ") {
				t.Errorf("error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

// fidScript computes, for each case, the mean and covariance with numpy and
// the FID the way pytorch-fid does (scipy.linalg.sqrtm of Σa·Σb, its real
// part, the trace).
const fidScript = `
import json, sys
import numpy as np
from scipy import linalg

def fid(mu1, s1, mu2, s2, eps=1e-6):
    diff = mu1 - mu2
    covmean, _ = linalg.sqrtm(s1.dot(s2), disp=False)
    if not np.isfinite(covmean).all():
        offset = np.eye(s1.shape[0]) * eps
        covmean = linalg.sqrtm((s1 + offset).dot(s2 + offset))
    covmean = np.real(covmean)
    return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))

out = []
for c in json.load(sys.stdin):
    d = c["d"]
    a = np.array(c["a"], dtype=np.float64).reshape(c["na"], d)
    b = np.array(c["b"], dtype=np.float64).reshape(c["nb"], d)
    mu1, mu2 = a.mean(axis=0), b.mean(axis=0)
    s1, s2 = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    out.append({"mu": mu1.tolist(), "sigma": s1.ravel().tolist(), "fid": fid(mu1, s1, mu2, s2)})
json.dump(out, sys.stdout)
`

type fidCase struct {
	D  int       `json:"d"`
	NA int       `json:"na"`
	NB int       `json:"nb"`
	A  []float64 `json:"a"`
	B  []float64 `json:"b"`
}

type fidReference struct {
	Mu    []float64 `json:"mu"`
	Sigma []float64 `json:"sigma"`
	FID   float64   `json:"fid"`
}

// fidCases are feature sets with more samples than dimensions and, for the
// singular covariances of d > n, fewer.
func fidCases() []fidCase {
	rng := rand.New(rand.NewPCG(11, 12))
	var cases []fidCase
	for _, c := range []struct{ d, na, nb int }{
		{2, 50, 70}, {16, 200, 150}, {64, 400, 300},
		{2, 2, 2}, {16, 10, 12}, {64, 40, 30},
	} {
		cases = append(cases, fidCase{
			D: c.d, NA: c.na, NB: c.nb,
			A: gaussianFeatures(rng, c.na, c.d, 0),
			B: gaussianFeatures(rng, c.nb, c.d, 0.3),
		})
	}
	return cases
}

func TestFrechetDistanceMatchesSciPy(t *testing.T) {
	cases := fidCases()
	var ref []fidReference
	pyref.Run(t, fidScript, cases, &ref)
	if len(ref) != len(cases) {
		t.Fatalf("python returned %d results for %d cases", len(ref), len(cases))
	}
	for i, c := range cases {
		t.Run(fmt.Sprintf("d=%d,n=%d,%d", c.D, c.NA, c.NB), func(t *testing.T) {
			a, err := FitStats(c.A, c.NA, c.D)
			if err != nil {
				t.Fatal(err)
			}
			b, err := FitStats(c.B, c.NB, c.D)
			if err != nil {
				t.Fatal(err)
			}
			got, err := FrechetDistance(a, b)
			if err != nil {
				t.Fatal(err)
			}
			want := ref[i].FID
			t.Logf("FID %.12g, scipy %.12g, relative difference %.2g", got, want, math.Abs(got-want)/math.Abs(want))
			if !closeRel(got, want, 1e-6, 0) {
				t.Errorf("FID = %.12g, scipy (pytorch-fid) = %.12g, relative difference %.3g", got, want, math.Abs(got-want)/math.Abs(want))
			}
		})
	}
}
