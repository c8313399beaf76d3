package metrics

import (
	"math/rand/v2"
	"testing"
	"time"

	"gonum.org/v1/gonum/mat"
)

func TestZZPerf(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	const d = 1024
	s := randomSPD(rng, d)
	var e mat.EigenSym
	t0 := time.Now()
	e.Factorize(s, false)
	t.Logf("values only %v", time.Since(t0))
	t0 = time.Now()
	e.Factorize(s, true)
	t.Logf("with vectors %v", time.Since(t0))
	var c mat.Cholesky
	t0 = time.Now()
	c.Factorize(s)
	t.Logf("cholesky %v", time.Since(t0))
	var m mat.Dense
	t0 = time.Now()
	m.Mul(s, s)
	t.Logf("mul %v", time.Since(t0))
}
