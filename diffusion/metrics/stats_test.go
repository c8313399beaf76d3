package metrics

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/internal/pyref"
)

func TestFitStatsMatchesNumPy(t *testing.T) {
	cases := fidCases()
	var ref []fidReference
	pyref.Run(t, fidScript, cases, &ref)
	for i, c := range cases {
		t.Run(fmt.Sprintf("d=%d,n=%d", c.D, c.NA), func(t *testing.T) {
			s, err := FitStats(c.A, c.NA, c.D)
			if err != nil {
				t.Fatal(err)
			}
			if s.N != c.NA || s.Dim() != c.D {
				t.Fatalf("N = %d, Dim = %d, want %d, %d", s.N, s.Dim(), c.NA, c.D)
			}
			var scale float64
			for _, v := range ref[i].Mu {
				scale = math.Max(scale, math.Abs(v))
			}
			for j, want := range ref[i].Mu {
				if math.Abs(s.Mu[j]-want) > 1e-12*math.Max(scale, 1) {
					t.Errorf("mu[%d] = %.17g, numpy %.17g", j, s.Mu[j], want)
				}
			}
			scale = 0
			for _, v := range ref[i].Sigma {
				scale = math.Max(scale, math.Abs(v))
			}
			for j, want := range ref[i].Sigma {
				r, k := j/c.D, j%c.D
				if got := s.Sigma.At(r, k); math.Abs(got-want) > 1e-12*scale {
					t.Errorf("sigma[%d,%d] = %.17g, numpy.cov %.17g", r, k, got, want)
				}
			}
		})
	}
}

// More rows than one accumulation block, with a large common offset that a
// one-pass E[x²]−E[x]² formula would lose to cancellation.
func TestFitStatsBlocksAndOffset(t *testing.T) {
	const n, d = 1000, 3
	x := make([]float64, n*d)
	for r := range n {
		x[r*d] = 1e8 + float64(r%2)   // variance of 0,1,0,1,…
		x[r*d+1] = -float64(r % 2)    // perfectly anti-correlated with column 0
		x[r*d+2] = float64(r) - 499.5 // variance n(n+1)/12
	}
	s, err := FitStats(x, n, d)
	if err != nil {
		t.Fatal(err)
	}
	half := 0.25 * n / (n - 1)
	want := [3][3]float64{
		{half, -half, s.Sigma.At(0, 2)},
		{-half, half, s.Sigma.At(1, 2)},
		{s.Sigma.At(2, 0), s.Sigma.At(2, 1), float64(n) * (n + 1) / 12},
	}
	for i := range d {
		for j := range d {
			if got := s.Sigma.At(i, j); !closeRel(got, want[i][j], 1e-12, 1) {
				t.Errorf("sigma[%d,%d] = %.17g, want %.17g", i, j, got, want[i][j])
			}
		}
	}
	if !closeRel(s.Mu[0], 1e8+0.5, 1e-15, 1) || s.Mu[1] != -0.5 || s.Mu[2] != 0 {
		t.Errorf("mu = %v", s.Mu)
	}
}

func TestFitStatsErrors(t *testing.T) {
	tests := []struct {
		name     string
		features []float64
		n, d     int
		want     string
	}{
		{"one row", []float64{1, 2}, 1, 2, "at least 2 feature vectors"},
		{"length mismatch", []float64{1, 2, 3}, 2, 2, "3 values do not make 2 rows of 2"},
		{"zero dimension", nil, 2, 0, "invalid shape"},
		{"nan", []float64{1, 2, math.NaN(), 4}, 2, 2, "value NaN at row 1, column 0"},
		{"inf", []float64{1, math.Inf(-1), 3, 4}, 2, 2, "value -Inf at row 0, column 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := FitStats(tt.features, tt.n, tt.d)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestFlatten(t *testing.T) {
	x, n, d, err := Flatten([][]float64{{1, 2, 3}, {4, 5, 6}})
	if err != nil || n != 2 || d != 3 || fmt.Sprint(x) != "[1 2 3 4 5 6]" {
		t.Errorf("Flatten = %v, %d, %d, %v", x, n, d, err)
	}
	if _, _, _, err := Flatten([][]float64{{1, 2}, {3}}); err == nil || !strings.Contains(err.Error(), "row 1 has 1 values, row 0 has 2") {
		t.Errorf("ragged rows: error = %v", err)
	}
	if _, _, _, err := Flatten(nil); err == nil {
		t.Error("no rows: no error")
	}
}
