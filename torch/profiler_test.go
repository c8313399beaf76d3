package torch

import (
	"strings"
	"sync"
	"testing"
	"time"
)

// profileOf runs f under the profiler and returns its table by name.
func profileOf(t *testing.T, f func()) map[string]OpStat {
	t.Helper()
	if err := StartProfiler(); err != nil {
		t.Fatal(err)
	}
	f()
	stats, err := StopProfiler()
	if err != nil {
		t.Fatal(err)
	}
	byName := make(map[string]OpStat)
	for i, st := range stats {
		if i > 0 && st.Self > stats[i-1].Self {
			t.Errorf("%s (self %v) comes after %s (self %v): want the largest self time first", st.Name, st.Self, stats[i-1].Name, stats[i-1].Self)
		}
		if st.Calls < 1 || st.Self < 0 || st.Self > st.Total {
			t.Errorf("%+v: want calls >= 1 and 0 <= self <= total", st)
		}
		byName[st.Name] = st
	}
	return byName
}

// The profiler counts each operator's calls, from every goroutine, and
// splits nested time: a convolution's total holds the kernel operator it
// calls, its self time does not. After StopProfiler nothing is recorded.
func TestProfiler(t *testing.T) {
	s := opScope(t, NoGrad)
	a := s.Randn([]int64{64, 64}, Float32, CPU, nil)
	x := s.Randn([]int64{2, 3, 16, 16}, Float32, CPU, nil)
	w := s.Randn([]int64{4, 3, 3, 3}, Float32, CPU, nil)
	const goroutines, adds = 4, 5
	got := profileOf(t, func() {
		var wg sync.WaitGroup
		for range goroutines {
			wg.Add(1)
			go func() {
				defer wg.Done()
				g := NewScope(NoGrad)
				defer g.Close()
				for range adds {
					g.Add(a, a)
				}
			}()
		}
		wg.Wait()
		s.Conv2d(x, w, nil, Conv2dOptions{Padding: [2]int64{1, 1}})
	})
	if add := got["aten::add"]; add.Calls != goroutines*adds {
		t.Errorf("aten::add: %d calls, want %d", add.Calls, goroutines*adds)
	}
	conv := got["aten::conv2d"]
	if conv.Calls != 1 || !(conv.Self < conv.Total) {
		t.Errorf("aten::conv2d: %+v, want one call whose self time is below its total", conv)
	}
	var inner time.Duration
	for name, st := range got {
		if name != "aten::conv2d" && strings.Contains(name, "conv") {
			inner += st.Self
		}
	}
	if inner == 0 || inner > conv.Total {
		t.Errorf("operators called by aten::conv2d: self time %v, want above 0 and within its total %v", inner, conv.Total)
	}

	again := profileOf(t, func() { s.Mul(a, a) })
	if _, ok := again["aten::add"]; ok || again["aten::mul"].Calls != 1 {
		t.Errorf("second profile %v: want one aten::mul and nothing of the first", again)
	}
}

func TestProfilerMisuse(t *testing.T) {
	if _, err := StopProfiler(); err == nil || !strings.Contains(err.Error(), "not running") {
		t.Errorf("stop before start: error %v, want one saying it is not running", err)
	}
	if err := StartProfiler(); err != nil {
		t.Fatal(err)
	}
	if err := StartProfiler(); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Errorf("second start: error %v, want one saying it is already running", err)
	}
	if _, err := StopProfiler(); err != nil {
		t.Fatal(err)
	}
}

func TestParseProfile(t *testing.T) {
	got, err := parseProfile("aten::add\t3\t300\t200\nMulBackward0\t1\t900\t900\n")
	if err != nil {
		t.Fatal(err)
	}
	want := []OpStat{{"MulBackward0", 1, 900, 900}, {"aten::add", 3, 300, 200}}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("got %+v, want %+v", got, want)
	}
	for _, bad := range []string{"aten::add\t3\t300\n", "aten::add\tx\t1\t1\n"} {
		if _, err := parseProfile(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	if got, err := parseProfile(""); err != nil || len(got) != 0 {
		t.Errorf("empty table: %v, %v", got, err)
	}
}
