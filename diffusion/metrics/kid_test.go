package metrics

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/internal/pyref"
)

func TestKIDSameDistribution(t *testing.T) {
	rng := rand.New(rand.NewPCG(31, 32))
	const n, d = 2000, 32
	// Two independent samples of one distribution.
	both := gaussianFeatures(rng, 2*n, d, 0)
	mean, std, err := KID(both[:n*d], both[n*d:], n, n, d, 10, DefaultKIDSubsetSize, 1)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(mean) > 1e-3 || std <= 0 || std > 1e-2 {
		t.Errorf("KID of two samples of one distribution = %g ± %g, want ≈ 0", mean, std)
	}
}

func TestKIDGrowsWithShift(t *testing.T) {
	const n, d = 600, 16
	// Two samples of one distribution; the second is then shifted.
	both := gaussianFeatures(rand.New(rand.NewPCG(41, 42)), 2*n, d, 0)
	ref := both[:n*d]
	prev := 0.0
	for _, shift := range []float64{0.1, 0.3, 1} {
		other := make([]float64, n*d)
		for i, v := range both[n*d:] {
			other[i] = v + shift
		}
		mean, std, err := KID(ref, other, n, n, d, 20, 500, 7)
		if err != nil {
			t.Fatal(err)
		}
		if mean <= prev || mean <= 3*std/math.Sqrt(20) {
			t.Errorf("shift %g: KID = %g ± %g, want positive and above %g", shift, mean, std, prev)
		}
		prev = mean
	}
}

func TestKIDDeterministic(t *testing.T) {
	rng := rand.New(rand.NewPCG(51, 52))
	const d = 8
	a, b := gaussianFeatures(rng, 300, d, 0), gaussianFeatures(rng, 200, d, 0.2)
	m1, s1, err := KID(a, b, 300, 200, d, 5, 100, 99)
	if err != nil {
		t.Fatal(err)
	}
	m2, s2, _ := KID(a, b, 300, 200, d, 5, 100, 99)
	m3, _, _ := KID(a, b, 300, 200, d, 5, 100, 100)
	if m1 != m2 || s1 != s2 {
		t.Errorf("same seed gave %g ± %g and %g ± %g", m1, s1, m2, s2)
	}
	if m1 == m3 {
		t.Errorf("different seeds gave the same KID %g", m1)
	}
}

func TestKIDMatchesNumPy(t *testing.T) {
	rng := rand.New(rand.NewPCG(61, 62))
	const n, d = 80, 12
	in := map[string]any{
		"a": gaussianFeatures(rng, n, d, 0),
		"b": gaussianFeatures(rng, n, d, 0.25),
		"n": n, "d": d,
	}
	var want float64
	pyref.Run(t, `
import json, sys
import numpy as np
c = json.load(sys.stdin)
n, d = c["n"], c["d"]
x = np.array(c["a"]).reshape(n, d)
y = np.array(c["b"]).reshape(n, d)
k = lambda p, q: (p @ q.T / d + 1) ** 3
kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
m = n
mmd = ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (m * (m - 1)) - 2 * kxy.sum() / (m * m)
json.dump(float(mmd), sys.stdout)
`, in, &want)
	got, std, err := KID(in["a"].([]float64), in["b"].([]float64), n, n, d, 1, DefaultKIDSubsetSize, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !closeRel(got, want, 1e-9, 0) || std != 0 {
		t.Errorf("KID = %.15g ± %g, numpy %.15g", got, std, want)
	}
}

func TestKIDErrors(t *testing.T) {
	x := make([]float64, 20)
	tests := []struct {
		name          string
		a, b          []float64
		na, nb, d     int
		subsets, size int
		want          string
	}{
		{"length", x, x[:18], 10, 10, 2, 1, 10, "second features: 18 values do not make 10 rows of 2"},
		{"no subsets", x, x, 10, 10, 2, 0, 10, "at least one subset"},
		{"subset too small", x, x, 10, 10, 2, 1, 1, "too small"},
		{"set too small", x, x[:2], 10, 1, 2, 1, 10, "too small"},
		{"nan", append([]float64{math.NaN()}, x[1:]...), x, 10, 10, 2, 1, 10, "first features: value NaN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := KID(tt.a, tt.b, tt.na, tt.nb, tt.d, tt.subsets, tt.size, 0)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}
