package torch

import (
	"context"
	"fmt"
	"math"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ddpm-go/ddpm/internal/disttest"
)

func needDist(t *testing.T) {
	t.Helper()
	if !DistAvailable() {
		t.Skip("this build has no distributed support (install libgloo-dev and rebuild the shim)")
	}
}

func TestDistEnv(t *testing.T) {
	env := func(kv ...string) func(string) (string, bool) {
		m := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
	}
	if _, ok, err := distEnv(env()); ok || err != nil {
		t.Fatalf("empty environment: ok %v err %v", ok, err)
	}
	cfg, ok, err := distEnv(env("RANK", "1", "WORLD_SIZE", "2", "MASTER_ADDR", "10.0.0.1", "MASTER_PORT", "29500"))
	if !ok || err != nil || cfg != (DistConfig{Rank: 1, World: 2, LocalRank: 1, Addr: "10.0.0.1", Port: 29500}) {
		t.Fatalf("got %+v %v %v", cfg, ok, err)
	}
	for _, c := range []struct {
		kv   []string
		want string
	}{
		{[]string{"RANK", "0"}, "WORLD_SIZE, MASTER_ADDR, MASTER_PORT missing"},
		{[]string{"RANK", "2", "WORLD_SIZE", "2", "MASTER_ADDR", "a", "MASTER_PORT", "1"}, `RANK="2"`},
		{[]string{"RANK", "0", "WORLD_SIZE", "x", "MASTER_ADDR", "a", "MASTER_PORT", "1"}, `WORLD_SIZE="x"`},
		{[]string{"RANK", "0", "WORLD_SIZE", "1", "MASTER_ADDR", "a", "MASTER_PORT", "70000"}, `MASTER_PORT="70000"`},
	} {
		_, _, err := distEnv(env(c.kv...))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want one containing %q", c.kv, err, c.want)
		}
	}
}

func TestDistUnavailableMessage(t *testing.T) {
	if DistAvailable() {
		t.Skip("this build has distributed support")
	}
	_, err := NewProcessGroup("127.0.0.1", 29500, 0, 1, time.Second)
	if err == nil || !strings.Contains(err.Error(), "no distributed support") {
		t.Fatalf("error %v", err)
	}
}

// TestDistHelperRank is one rank of the tests below (it does nothing unless
// started by them).
func TestDistHelperRank(t *testing.T) {
	if !disttest.IsRank() {
		t.Skip("started only as a rank of a distributed test")
	}
	cfg, ok, err := DistEnv()
	if !ok || err != nil {
		t.Fatalf("launch environment: %v %v", ok, err)
	}
	timeout := 20 * time.Second
	if os.Getenv("DIST_TIMEOUT") != "" {
		timeout, _ = time.ParseDuration(os.Getenv("DIST_TIMEOUT"))
	}
	g, err := NewProcessGroup(cfg.Addr, cfg.Port, cfg.Rank, cfg.World, timeout)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	switch os.Getenv("DIST_SCENARIO") {
	case "collectives":
		distCollectives(t, g)
	case "peer-dies":
		distPeerDies(t, g, false)
	case "peer-hangs":
		distPeerDies(t, g, true)
	default:
		t.Fatalf("unknown scenario %q", os.Getenv("DIST_SCENARIO"))
	}
}

func distCollectives(t *testing.T, g *ProcessGroup) {
	s := NewScope(NoGrad)
	defer s.Close()
	r := float32(g.Rank() + 1)
	w := float32(g.World())
	a := s.FromFloat32s([]float32{r, 2 * r, -r}, 3)
	b := s.FromFloat64s([]float64{float64(r)}, 1)
	// Bigger than one 25 MB bucket, so the list spans several.
	big := s.Full([]int64{7 << 20}, float64(r), Float32, CPU)
	if err := g.AllReduceMean([]*Tensor{a, b, big}); err != nil {
		t.Fatal(err)
	}
	mean := (w + 1) / 2
	expectF32(t, "mean a", a, []float32{mean, 2 * mean, -mean})
	expectF32(t, "mean big (first values)", s.Narrow(big, 0, 0, 4), []float32{mean, mean, mean, mean})
	expectF32(t, "mean big (last values)", s.Narrow(big, 0, (7<<20)-2, 2), []float32{mean, mean})
	if v, _ := b.Float64s(); math.Abs(v[0]-float64(mean)) > 1e-12 {
		t.Errorf("mean b = %v, want %v", v, mean)
	}
	c := s.FromFloat32s([]float32{r}, 1)
	if err := g.AllReduceSum([]*Tensor{c}); err != nil {
		t.Fatal(err)
	}
	expectF32(t, "sum", c, []float32{w * (w + 1) / 2})
	// Broadcast from the last rank.
	d := s.FromFloat32s([]float32{r, r * 10}, 2)
	if err := g.Broadcast([]*Tensor{d}, g.World()-1); err != nil {
		t.Fatal(err)
	}
	expectF32(t, "broadcast", d, []float32{w, w * 10})
	// Gradients: parameter p gets gradient rank+1 everywhere, then their mean.
	gs := NewScope(Grad)
	defer gs.Close()
	p := gs.Zeros([]int64{2, 2}, Float32, CPU)
	if err := p.SetRequiresGrad(true); err != nil {
		t.Fatal(err)
	}
	q := gs.Zeros([]int64{3}, Float32, CPU) // no gradient on any rank
	if err := q.SetRequiresGrad(true); err != nil {
		t.Fatal(err)
	}
	// Twice, so the sync is seen to start afresh after Finish.
	sync, err := g.NewGradSync([]*Tensor{p, q})
	if err != nil {
		t.Fatal(err)
	}
	defer sync.Close()
	for range 2 {
		gs.Backward(gs.Sum(gs.MulScalar(p, float64(r)), nil, false))
		if err := gs.Err(); err != nil {
			t.Fatal(err)
		}
		if err := sync.Finish(); err != nil {
			t.Fatal(err)
		}
		expectF32(t, "grad p", gs.Grad(p), []float32{mean, mean, mean, mean})
		expectF32(t, "grad q", gs.Grad(q), []float32{0, 0, 0})
		for _, x := range []*Tensor{p, q} {
			if err := x.ZeroGrad(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := g.Barrier(); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("rank %d: collectives ok\n", g.Rank())
}

func expectF32(t *testing.T, what string, x *Tensor, want []float32) {
	t.Helper()
	got, err := x.Float32s()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if len(got) != len(want) {
		t.Fatalf("%s: %v, want %v", what, got, want)
	}
	for i := range got {
		if math.Abs(float64(got[i]-want[i])) > 1e-6 {
			t.Fatalf("%s: %v, want %v", what, got, want)
		}
	}
}

// distPeerDies: the last rank leaves after one all-reduce (exiting, or
// hanging without exiting); the others keep reducing and must get an error.
func distPeerDies(t *testing.T, g *ProcessGroup, hang bool) {
	s := NewScope(NoGrad)
	defer s.Close()
	x := s.Ones([]int64{1000}, Float32, CPU)
	if err := g.AllReduceMean([]*Tensor{x}); err != nil {
		t.Fatal(err)
	}
	if g.Rank() == g.World()-1 {
		if hang {
			time.Sleep(time.Hour)
		}
		os.Exit(3)
	}
	start := time.Now()
	for range 1000 {
		if err := g.AllReduceMean([]*Tensor{x}); err != nil {
			fmt.Printf("rank %d: failed after %.1fs: %v\n", g.Rank(), time.Since(start).Seconds(), err)
			// A second call fails at once.
			if err := g.AllReduceMean([]*Tensor{x}); err == nil {
				t.Fatal("a broken group still reduces")
			}
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("all-reduce kept succeeding after the peer left")
}

func TestDistCollectivesTwoRanks(t *testing.T) {
	needDist(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ranks := disttest.Start(ctx, t, 2, "TestDistHelperRank", func(int) []string { return []string{"DIST_SCENARIO=collectives"} })
	disttest.Wait(t, ranks)
	for i, r := range ranks {
		if !strings.Contains(r.Out.String(), fmt.Sprintf("rank %d: collectives ok", i)) {
			t.Errorf("rank %d did not finish:\n%s", i, r.Out.String())
		}
	}
}

func TestDistPeerKilled(t *testing.T) {
	needDist(t)
	for _, scenario := range []string{"peer-dies", "peer-hangs"} {
		t.Run(scenario, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			const timeout = 5 * time.Second
			ranks := disttest.Start(ctx, t, 2, "TestDistHelperRank", func(int) []string {
				return []string{"DIST_SCENARIO=" + scenario, "DIST_TIMEOUT=" + timeout.String()}
			})
			r0 := ranks[0]
			<-r0.Done
			if scenario == "peer-hangs" {
				ranks[1].Cmd.Process.Kill()
			}
			<-ranks[1].Done
			out := r0.Out.String()
			if r0.Err != nil || !strings.Contains(out, "rank 0: failed after") {
				t.Fatalf("rank 0 did not see the failure (%v):\n%s", r0.Err, disttest.Describe(ranks))
			}
			if r0.Elapse > 3*timeout+10*time.Second {
				t.Errorf("rank 0 took %v to notice", r0.Elapse)
			}
			t.Logf("rank 0 after %v: %s", r0.Elapse.Round(time.Millisecond), firstLine(out, "failed after"))
		})
	}
}

func firstLine(s, sub string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			return l
		}
	}
	return ""
}
