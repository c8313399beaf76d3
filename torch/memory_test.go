package torch

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// residentBytes is this process's resident set size.
func residentBytes(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		t.Skipf("no /proc/self/statm: %v", err)
	}
	f := strings.Fields(string(b))
	pages, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return pages * int64(os.Getpagesize())
}

// A forward/backward/update loop in scopes leaves the live-tensor count where
// it started, and resident memory stays flat once warm.
func TestTrainingLoopLeaksNothing(t *testing.T) {
	iters := 1000
	if testing.Short() {
		iters = 200
	}
	start := LiveTensors()
	g := opGen(t, 1)

	init := NewScope(NoGrad)
	w := init.Keep(init.MulScalar(init.Randn([]int64{8, 3, 3, 3}, Float32, CPU, g), 0.1))
	lin := init.Keep(init.MulScalar(init.Randn([]int64{4, 8}, Float32, CPU, g), 0.1))
	init.Close()
	for _, p := range []*Tensor{w, lin} {
		if err := p.SetRequiresGrad(true); err != nil {
			t.Fatal(err)
		}
	}

	step := func() {
		s := NewScope(Grad)
		defer s.Close()
		x := s.Randn([]int64{4, 3, 16, 16}, Float32, CPU, g)
		h := s.SiLU(s.GroupNorm(s.Conv2d(x, w, nil, Conv2dOptions{Padding: [2]int64{1, 1}}), 4, nil, nil, 1e-5))
		y := s.Linear(s.Mean(h, []int64{2, 3}, false), lin, nil)
		loss := s.MSELoss(y, s.Zeros([]int64{4, 4}, Float32, CPU), ReduceMean)
		s.Backward(loss)
		u := NewScope(NoGrad)
		for _, p := range []*Tensor{w, lin} {
			u.SubInPlace(p, u.MulScalar(u.Grad(p), 0.01))
			if err := p.ZeroGrad(); err != nil {
				t.Fatal(err)
			}
		}
		u.Close()
		if err := s.Err(); err != nil {
			t.Fatal(err)
		}
		if err := u.Err(); err != nil {
			t.Fatal(err)
		}
	}
	var warm int64
	for i := range iters {
		step()
		if i == iters/10 {
			runtime.GC()
			warm = residentBytes(t)
		}
	}
	runtime.GC()
	end := residentBytes(t)
	w.Close()
	lin.Close()
	if got := LiveTensors(); got != start {
		t.Errorf("live tensors: %d before, %d after %d steps", start, got, iters)
	}
	t.Logf("resident: %.1f MiB after %d steps, %.1f MiB after %d", float64(warm)/(1<<20), iters/10, float64(end)/(1<<20), iters)
	if growth := end - warm; growth > 16<<20 {
		t.Errorf("resident memory grew by %.1f MiB over %d steps", float64(growth)/(1<<20), iters-iters/10)
	}
}

func TestKeepAndAdopt(t *testing.T) {
	start := LiveTensors()
	s := NewScope(NoGrad)
	a := s.Ones([]int64{3}, Float32, CPU)
	b := s.Keep(s.Zeros([]int64{3}, Float32, CPU))
	if s.Len() != 1 {
		t.Fatalf("scope owns %d tensors, want 1", s.Len())
	}
	s.Close()
	if _, err := a.Float32s(); err == nil {
		t.Error("a tensor of a closed scope is still readable")
	}
	if v, err := b.Float32s(); err != nil || len(v) != 3 {
		t.Errorf("kept tensor: %v, %v", v, err)
	}
	s2 := NewScope(NoGrad)
	s2.Adopt(b)
	s2.Close()
	if got := LiveTensors(); got != start {
		t.Errorf("live tensors %d, want %d", got, start)
	}
}

// Block frees a block's intermediates when it returns and hands its result
// to the outer scope, keeps the outer scope's autocast, and records a
// failure inside it in the outer scope (after which it runs nothing).
func TestBlock(t *testing.T) {
	start := LiveTensors()
	s, err := NewAutocastScope(NoGrad, BFloat16)
	if err != nil {
		t.Fatal(err)
	}
	x := s.Ones([]int64{2, 3}, Float32, CPU)
	y := s.Block(func(c *Scope) *Tensor {
		if dt, ok := c.Autocast(); !ok || dt != BFloat16 {
			t.Errorf("block's autocast %v, %v; want bfloat16", dt, ok)
		}
		return c.AddScalar(c.MulScalar(c.AddScalar(x, 1), 3), -1) // two intermediates
	})
	if got := LiveTensors() - start; got != 2 {
		t.Errorf("%d tensors alive after the block, want 2 (x and its result)", got)
	}
	if s.Len() != 2 {
		t.Errorf("outer scope owns %d tensors, want 2", s.Len())
	}
	if v, err := y.Float32s(); err != nil || v[0] != 5 {
		t.Errorf("block's result %v, %v; want 5s", v, err)
	}
	bad := s.Block(func(c *Scope) *Tensor {
		return c.Add(x, c.Ones([]int64{4}, Float32, CPU)) // shapes that do not broadcast
	})
	if bad != nil || s.Err() == nil {
		t.Errorf("a failing block returned %v and left the scope's error %v", bad, s.Err())
	}
	ran := false
	if s.Block(func(c *Scope) *Tensor { ran = true; return nil }) != nil || ran {
		t.Error("a block ran in a scope that had failed")
	}
	s.Close()
	// BlockIn runs in the scope it is given (here an autocast one inside a
	// scope without autocast) and closes it.
	plain := NewScope(NoGrad)
	c, err := NewAutocastScope(NoGrad, BFloat16)
	if err != nil {
		t.Fatal(err)
	}
	kept := plain.BlockIn(c, func(c *Scope) *Tensor {
		if _, ok := c.Autocast(); !ok {
			t.Error("BlockIn's f does not run in the scope given")
		}
		return c.AddScalar(c.Ones([]int64{2}, Float32, CPU), 1)
	})
	if c.Ones([]int64{1}, Float32, CPU) != nil || c.Err() == nil || plain.Len() != 1 || kept == nil {
		t.Errorf("after BlockIn: the child still open (%v) or the outer scope owns %d tensors, want 1", c.Err(), plain.Len())
	}
	// A block that returns a tensor it did not make (one of x's scope, a
	// kept one) leaves it with its owner: closing the outer scope frees
	// neither.
	other, free := NewScope(NoGrad), NewScope(NoGrad)
	theirs := other.Ones([]int64{2}, Float32, CPU)
	loose := free.Keep(free.Ones([]int64{2}, Float32, CPU))
	free.Close()
	for _, want := range []*Tensor{theirs, loose} {
		if got := plain.Block(func(*Scope) *Tensor { return want }); got != want {
			t.Errorf("Block returned %v, want the tensor f returned", got)
		}
	}
	plain.Close()
	for _, x := range []*Tensor{theirs, loose} {
		if _, err := x.Float32s(); err != nil {
			t.Errorf("a tensor a block returned but did not make was freed with the outer scope: %v", err)
		}
	}
	other.Close()
	loose.Close()
	if got := LiveTensors(); got != start {
		t.Errorf("live tensors %d, want %d", got, start)
	}
}

// Adopting a tensor of another scope takes it out of that scope: closing the
// old owner no longer frees it, closing the new one does.
func TestAdoptTakesTensorFromItsOwner(t *testing.T) {
	start := LiveTensors()
	a := NewScope(NoGrad)
	b := NewScope(NoGrad)
	x := a.Ones([]int64{4}, Float32, CPU)
	b.Adopt(x)
	if a.Len() != 0 || b.Len() != 1 {
		t.Fatalf("after Adopt the old scope owns %d tensors and the new one %d, want 0 and 1", a.Len(), b.Len())
	}
	a.Keep(x) // not a's any more: ignored
	a.Close()
	if v, err := x.Float32s(); err != nil || len(v) != 4 || v[0] != 1 {
		t.Fatalf("adopted tensor after closing its old scope: %v, %v", v, err)
	}
	if got := LiveTensors(); got != start+1 {
		t.Errorf("live tensors %d, want %d", got, start+1)
	}
	b.Close()
	if x.handle() != nil {
		t.Error("closing the adopting scope left its tensor open")
	}
	if got := LiveTensors(); got != start {
		t.Errorf("live tensors %d after closing both scopes, want %d", got, start)
	}
}

// Scopes adopting each other's tensors from many goroutines, while being
// closed, free every tensor exactly once.
func TestAdoptAcrossScopesConcurrently(t *testing.T) {
	start := LiveTensors()
	for range 50 {
		a, b := NewScope(NoGrad), NewScope(NoGrad)
		var xs, ys []*Tensor
		for range 20 {
			xs = append(xs, a.Ones([]int64{2}, Float32, CPU))
			ys = append(ys, b.Ones([]int64{2}, Float32, CPU))
		}
		var wg sync.WaitGroup
		wg.Add(3)
		go func() { defer wg.Done(); b.Adopt(xs...) }()
		go func() { defer wg.Done(); a.Adopt(ys...) }()
		go func() { defer wg.Done(); a.Close() }()
		wg.Wait()
		b.Close()
		a.Close()
	}
	if got := LiveTensors(); got != start {
		t.Errorf("live tensors %d, want %d", got, start)
	}
}

// A tensor closed on its own leaves its scope, so a long-lived scope does
// not grow with tensors already freed.
func TestClosedTensorLeavesScope(t *testing.T) {
	s := NewScope(NoGrad)
	defer s.Close()
	x := s.Ones([]int64{1}, Float32, CPU)
	for range 1000 {
		s.Add(x, x).Close()
	}
	if s.Len() != 1 {
		t.Fatalf("scope holds %d tensors after 1000 were made and closed, want 1", s.Len())
	}
	other := NewScope(NoGrad)
	y := s.Keep(s.Ones([]int64{1}, Float32, CPU))
	other.Adopt(y)
	s.Keep(y) // not s's any more: ignored
	if other.Len() != 1 {
		t.Fatalf("adopting scope holds %d tensors, want 1", other.Len())
	}
	other.Close()
	if y.handle() != nil {
		t.Error("closing the adopting scope left its tensor open")
	}
}

// Tensors that are never closed are freed by the garbage collector: the
// backstop, not the way to manage memory.
func TestGarbageCollectorBackstop(t *testing.T) {
	start, collected := LiveTensors(), CollectedTensors()
	func() {
		s := NewScope(NoGrad)
		for range 10 {
			s.Keep(s.Ones([]int64{1000}, Float32, CPU)) // dropped without Close
		}
		s.Close()
	}()
	deadline := time.Now().Add(5 * time.Second)
	for LiveTensors() != start && time.Now().Before(deadline) {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	if got := LiveTensors(); got != start {
		t.Fatalf("live tensors %d, want %d after GC", got, start)
	}
	if got := CollectedTensors() - collected; got != 10 {
		t.Errorf("collected %d tensors, want 10", got)
	}
}
