package metrics

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/internal/pyref"
)

func TestInceptionScoreUniform(t *testing.T) {
	const n, c = 100, 10
	p := make([]float64, n*c)
	for i := range p {
		p[i] = 1.0 / c
	}
	mean, std, err := InceptionScore(p, n, c, DefaultISSplits)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(mean-1) > 1e-9 || std > 1e-9 {
		t.Errorf("IS of uniform predictions = %g ± %g, want 1", mean, std)
	}
}

func TestInceptionScoreOneHot(t *testing.T) {
	for _, c := range []int{1, 7, 10} {
		n := 10 * c
		p := make([]float64, n*c)
		for r := range n {
			p[r*c+r%c] = 1 // every split of c rows holds each class once
		}
		mean, std, err := InceptionScore(p, n, c, 10)
		if err != nil {
			t.Fatal(err)
		}
		if math.Abs(mean-float64(c)) > 1e-9 || std > 1e-9 {
			t.Errorf("C=%d: IS of evenly spread one-hot predictions = %g ± %g, want %d", c, mean, std, c)
		}
	}
}

// The original implementation (openai/improved-gan), rewritten in numpy, on
// random softmax outputs with splits of unequal size.
func TestInceptionScoreMatchesNumPy(t *testing.T) {
	rng := rand.New(rand.NewPCG(71, 72))
	const n, c, splits = 103, 9, 4
	p := make([]float64, n*c)
	for r := range n {
		var sum float64
		for k := range c {
			p[r*c+k] = math.Exp(2 * rng.NormFloat64())
			sum += p[r*c+k]
		}
		for k := range c {
			p[r*c+k] /= sum
		}
	}
	var want [2]float64
	pyref.Run(t, `
import json, sys
import numpy as np
c = json.load(sys.stdin)
preds = np.array(c["p"]).reshape(c["n"], c["c"])
splits = c["splits"]
scores = []
for i in range(splits):
    part = preds[(i * preds.shape[0] // splits):((i + 1) * preds.shape[0] // splits), :]
    kl = part * (np.log(part) - np.log(np.expand_dims(np.mean(part, 0), 0)))
    scores.append(np.exp(np.mean(np.sum(kl, 1))))
json.dump([float(np.mean(scores)), float(np.std(scores))], sys.stdout)
`, map[string]any{"p": p, "n": n, "c": c, "splits": splits}, &want)
	mean, std, err := InceptionScore(p, n, c, splits)
	if err != nil {
		t.Fatal(err)
	}
	if !closeRel(mean, want[0], 1e-12, 0) || !closeRel(std, want[1], 1e-9, 0) {
		t.Errorf("IS = %.15g ± %.15g, numpy %.15g ± %.15g", mean, std, want[0], want[1])
	}
}

func TestInceptionScoreErrors(t *testing.T) {
	tests := []struct {
		name      string
		p         []float64
		n, c, spl int
		want      string
	}{
		{"negative", []float64{1.5, -0.5, 0.5, 0.5}, 2, 2, 1, "probability -0.5 < 0 at row 0, class 1"},
		{"logits", []float64{0.5, 0.5, 2, 3}, 2, 2, 1, "row 1 sums to 5, not 1"},
		{"too few samples", []float64{0.5, 0.5, 0.5, 0.5}, 2, 2, 3, "2 samples cannot fill 3 splits"},
		{"no splits", []float64{0.5, 0.5}, 1, 2, 0, "at least one split"},
		{"length", []float64{0.5, 0.5, 1}, 2, 2, 1, "3 values do not make 2 rows of 2"},
		{"nan", []float64{math.NaN(), 1}, 1, 2, 1, "value NaN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := InceptionScore(tt.p, tt.n, tt.c, tt.spl)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}
