package torch

import (
	"runtime"
	"sync"
	"testing"
)

// libtorch keeps grad mode per OS thread and Go moves goroutines between
// threads, so a mode set by one call could be seen by another goroutine's
// next call. Scopes pass their mode with every call; this test interleaves
// scopes of all three modes on many goroutines and checks every result.
func TestModesHoldAcrossGoroutinesAndThreads(t *testing.T) {
	prev := runtime.GOMAXPROCS(4)
	defer runtime.GOMAXPROCS(prev)

	s0 := NewScope(NoGrad)
	w := s0.Keep(s0.Ones([]int64{4}, Float32, CPU))
	s0.Close()
	defer w.Close()
	if err := w.SetRequiresGrad(true); err != nil {
		t.Fatal(err)
	}

	const workers, iters = 8, 2000
	var wrong, calls sync.Map
	var wg sync.WaitGroup
	for g := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			bad, n := 0, 0
			for i := range iters {
				mode := Mode((g + i) % 3)
				s := NewScope(mode)
				y := s.MulScalar(w, 2)
				m, err := y.Meta()
				if err != nil {
					t.Error(err)
					s.Close()
					return
				}
				n++
				if m.RequiresGrad != (mode == Grad) {
					bad++
				}
				s.Close()
				if i%7 == 0 {
					runtime.Gosched()
				}
			}
			wrong.Store(g, bad)
			calls.Store(g, n)
		}()
	}
	wg.Wait()
	total, checked := 0, 0
	wrong.Range(func(_, v any) bool { total += v.(int); return true })
	calls.Range(func(_, v any) bool { checked += v.(int); return true })
	if checked != workers*iters {
		t.Fatalf("checked %d results, want %d", checked, workers*iters)
	}
	if total != 0 {
		t.Fatalf("%d of %d results had the wrong grad mode", total, checked)
	}
}

// Backward runs with grad mode on even from a NoGrad scope, and an inference
// scope's results never require grad.
func TestBackwardFromNoGradScope(t *testing.T) {
	g := NewScope(Grad)
	defer g.Close()
	x := g.FromFloat64s([]float64{1, 2, 3}, 3)
	if err := x.SetRequiresGrad(true); err != nil {
		t.Fatal(err)
	}
	loss := g.Sum(g.Square(x), nil, false)
	n := NewScope(NoGrad)
	defer n.Close()
	n.Backward(loss)
	grad, err := n.Grad(x).Float64s()
	if err != nil || n.Err() != nil {
		t.Fatal(err, n.Err())
	}
	for i, want := range []float64{2, 4, 6} {
		if grad[i] != want {
			t.Errorf("grad[%d] = %g, want %g", i, grad[i], want)
		}
	}
	inf := NewScope(Inference)
	defer inf.Close()
	if m, _ := inf.MulScalar(x, 2).Meta(); m.RequiresGrad {
		t.Error("inference-mode result requires grad")
	}
}
