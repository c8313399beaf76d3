package torch

import (
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

func cacheStats(t *testing.T) CPUCacheStats {
	t.Helper()
	st, err := CPUCache()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// withCacheLimit runs the test with the cache limit set to limit and puts
// the previous limit back afterwards.
func withCacheLimit(t *testing.T, limit int64) {
	t.Helper()
	prev := cacheStats(t).LimitBytes
	if err := SetCPUCacheLimit(limit); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := SetCPUCacheLimit(prev); err != nil {
			t.Error(err)
		}
	})
}

// A freed block comes back for the next tensor of the same size, and a
// reused block holds what the new tensor's operation wrote, not what the
// old tensor left there.
func TestCPUCacheReusesFreedBlocks(t *testing.T) {
	withCacheLimit(t, math.MaxInt64)
	shape := []int64{512, 1024} // 2 MiB of float32
	const size = 512 * 1024 * 4

	s := NewScope(NoGrad)
	s.Full(shape, 7, Float32, CPU)
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	before := cacheStats(t)
	if before.CachedBytes < size {
		t.Fatalf("after freeing a 2 MiB tensor %d bytes are cached, want at least %d", before.CachedBytes, size)
	}

	s = NewScope(NoGrad)
	defer s.Close()
	z := s.Zeros(shape, Float32, CPU)
	got, err := z.Float32s()
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range got {
		if v != 0 {
			t.Fatalf("zeros[%d] = %v in a reused block", i, v)
		}
	}
	after := cacheStats(t)
	if after.Hits <= before.Hits {
		t.Errorf("hits %d -> %d: the freed block was not reused", before.Hits, after.Hits)
	}
	if after.Misses != before.Misses {
		t.Errorf("misses %d -> %d: a tensor of a cached size took new memory", before.Misses, after.Misses)
	}
	if after.InUseBytes < before.InUseBytes+size {
		t.Errorf("in use %d -> %d bytes, want at least %d more", before.InUseBytes, after.InUseBytes, size)
	}
}

// Limit 0 turns caching off and frees what is idle; EmptyCPUCache frees
// everything idle.
func TestCPUCacheLimitAndEmpty(t *testing.T) {
	withCacheLimit(t, math.MaxInt64)
	s := NewScope(NoGrad)
	s.Ones([]int64{300, 1000}, Float32, CPU)
	s.Close()
	if st := cacheStats(t); st.CachedBytes == 0 {
		t.Fatalf("nothing cached after freeing a 1.2 MB tensor: %+v", st)
	}
	if err := EmptyCPUCache(); err != nil {
		t.Fatal(err)
	}
	if st := cacheStats(t); st.CachedBytes != 0 {
		t.Fatalf("EmptyCPUCache left %d bytes cached", st.CachedBytes)
	}

	if err := SetCPUCacheLimit(0); err != nil {
		t.Fatal(err)
	}
	s = NewScope(NoGrad)
	s.Ones([]int64{300, 1000}, Float32, CPU)
	s.Close()
	if st := cacheStats(t); st.CachedBytes != 0 || st.LimitBytes != 0 {
		t.Fatalf("with limit 0: %+v, want nothing cached", st)
	}
	if err := SetCPUCacheLimit(-1); err == nil {
		t.Error("SetCPUCacheLimit(-1) succeeded")
	}
}

// A bounded cache never keeps more idle bytes than its limit.
func TestCPUCacheRespectsLimit(t *testing.T) {
	const limit = 3 << 20
	withCacheLimit(t, limit)
	s := NewScope(NoGrad)
	for i := range 8 {
		s.Ones([]int64{int64(256 * (i + 1)), 1024}, Float32, CPU) // 1 to 8 MiB
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if st := cacheStats(t); st.CachedBytes > limit {
		t.Fatalf("%d bytes cached over a limit of %d", st.CachedBytes, limit)
	}
}

// Over the limit, the sizes asked for least recently are freed first.
func TestCPUCacheEvictsLeastRecentlyUsed(t *testing.T) {
	const mib = 1 << 18 // float32 elements in 1 MiB
	withCacheLimit(t, 5<<19)
	if err := EmptyCPUCache(); err != nil {
		t.Fatal(err)
	}
	// Three sizes more than a quarter apart, so that none serves another.
	a, b, c := []int64{mib}, []int64{mib * 3 / 2}, []int64{mib * 5 / 8}
	use := func(shape []int64) {
		s := NewScope(NoGrad)
		s.Ones(shape, Float32, CPU)
		if err := s.Err(); err != nil {
			t.Fatal(err)
		}
		s.Close()
	}
	use(a)
	use(b)
	use(a) // a is now newer than b
	use(c) // 3.125 MiB would be idle: b, the oldest, goes
	before := cacheStats(t)
	use(a)
	mid := cacheStats(t)
	use(b)
	after := cacheStats(t)
	if mid.Hits != before.Hits+1 || mid.Misses != before.Misses {
		t.Errorf("the recently used size was evicted: %+v -> %+v", before, mid)
	}
	if after.Misses != mid.Misses+1 {
		t.Errorf("the least recently used size is still cached: %+v -> %+v", mid, after)
	}
}

// A request takes the smallest idle block of at least its size and at most
// a quarter larger: a freed 1 MiB block serves 0.9 MiB, not 0.7 MiB.
func TestCPUCacheBestFit(t *testing.T) {
	const mib = 1 << 18 // float32 elements in 1 MiB
	withCacheLimit(t, 64<<20)
	if err := EmptyCPUCache(); err != nil {
		t.Fatal(err)
	}
	use := func(elems int64) {
		s := NewScope(NoGrad)
		x := s.Full([]int64{elems}, 2, Float32, CPU)
		if v, err := s.Sum(x, nil, false).Item(); err != nil || v != float64(2*elems) {
			t.Fatalf("sum %g, %v; want %d", v, err, 2*elems)
		}
		s.Close()
	}
	use(mib)
	before := cacheStats(t)
	use(mib * 9 / 10)
	mid := cacheStats(t)
	use(mib * 7 / 10)
	after := cacheStats(t)
	if mid.Hits != before.Hits+1 || mid.Misses != before.Misses {
		t.Errorf("0.9 MiB did not take the idle 1 MiB block: %+v -> %+v", before, mid)
	}
	if after.Misses != mid.Misses+1 {
		t.Errorf("0.7 MiB took a block more than a quarter larger: %+v -> %+v", mid, after)
	}
}

// Goroutines allocating and freeing blocks of mixed sizes at once each see
// their own values, and every block is accounted for at the end.
func TestCPUCacheConcurrent(t *testing.T) {
	withCacheLimit(t, math.MaxInt64)
	start := cacheStats(t)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			for range 100 {
				s := NewScope(NoGrad)
				n := int64(16<<10 + rng.IntN(256<<10)) // 64 KiB to 1.1 MiB of float32
				value := float64(g*1000 + rng.IntN(1000))
				x := s.Full([]int64{n}, value, Float32, CPU)
				sum, err := s.Sum(x, nil, false).Item()
				s.Close()
				if err != nil {
					errs <- err
					return
				}
				if want := value * float64(n); math.Abs(sum-want) > 1e-6*want {
					errs <- &Error{Op: "test", Msg: "a goroutine read another's values"}
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if end := cacheStats(t); end.InUseBytes != start.InUseBytes {
		t.Errorf("in use %d bytes before, %d after every tensor was freed", start.InUseBytes, end.InUseBytes)
	}
}

// TrimCPUCache frees the blocks not taken within its idle time and keeps
// those taken since.
func TestCPUCacheTrim(t *testing.T) {
	withCacheLimit(t, math.MaxInt64)
	if err := EmptyCPUCache(); err != nil {
		t.Fatal(err)
	}
	const mib = 1 << 18 // float32 elements in 1 MiB
	use := func(n int64) {
		s := NewScope(NoGrad)
		s.Ones([]int64{n}, Float32, CPU)
		if err := s.Err(); err != nil {
			t.Fatal(err)
		}
		s.Close()
	}
	use(mib) // 1 MiB, then idle
	time.Sleep(200 * time.Millisecond)
	use(mib * 3 / 2) // 1.5 MiB, asked for just now
	if c := cacheStats(t).CachedBytes; c != 5<<19 {
		t.Fatalf("%d bytes cached, want 2.5 MiB", c)
	}
	freed, err := TrimCPUCache(100 * time.Millisecond)
	if err != nil || freed != 1<<20 {
		t.Fatalf("trim freed %d bytes (%v), want the 1 MiB block idle for 200 ms", freed, err)
	}
	if c := cacheStats(t).CachedBytes; c != 3<<19 {
		t.Errorf("%d bytes cached after the trim, want the recent 1.5 MiB", c)
	}
	if freed, err := TrimCPUCache(0); err != nil || freed != 3<<19 {
		t.Errorf("trim of everything freed %d bytes (%v), want 1.5 MiB", freed, err)
	}
	if _, err := TrimCPUCache(-time.Second); err == nil {
		t.Error("a negative idle time was accepted")
	}

	// Two blocks of one size held at once, then one of them reused for
	// 200 ms: the other one goes, though its size is in use.
	s := NewScope(NoGrad)
	s.Ones([]int64{mib}, Float32, CPU)
	s.Ones([]int64{mib}, Float32, CPU)
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	for range 4 {
		time.Sleep(50 * time.Millisecond)
		use(mib)
	}
	if freed, err := TrimCPUCache(100 * time.Millisecond); err != nil || freed != 1<<20 {
		t.Errorf("trim freed %d bytes (%v), want the 1 MiB block not reused for 200 ms", freed, err)
	}
	if c := cacheStats(t).CachedBytes; c != 1<<20 {
		t.Errorf("%d bytes cached after the trim, want the 1 MiB block in use", c)
	}
}
