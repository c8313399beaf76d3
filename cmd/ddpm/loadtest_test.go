package main

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion/pipeline"
	"github.com/ddpm-go/ddpm/diffusion/serve"
	"github.com/ddpm-go/ddpm/diffusion/unet"
)

// The load generator runs both servers at each level, taking turns each
// round, counts every request and fails none.
func TestLoadtest(t *testing.T) {
	code, out, errOut := ddpm(t, "loadtest", "--preset", "tiny", "--clients", "1,3", "--rounds", "2", "--duration", "300ms", "--steps", "2", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var rep loadReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if len(rep.Levels) != 8 || rep.DirectS <= 0 {
		t.Fatalf("report %+v", rep)
	}
	cfg, err := unet.Preset("tiny")
	if err != nil {
		t.Fatal(err)
	}
	flops := cfg.FLOPs()
	for i, l := range rep.Levels {
		// Server by server, level by level, round by round.
		wantServer, wantClients, wantRound := []string{"one-at-a-time", "batched"}[i/4], []int{1, 3}[i/2%2], 1+i%2
		if l.Server != wantServer || l.Clients != wantClients || l.Round != wantRound || l.Requests < 1 || l.Errors != 0 || l.ImagesPerS <= 0 ||
			!(l.P50 > 0 && l.P50 <= l.P95 && l.P95 <= l.P99) {
			t.Errorf("level %d: %+v", i, l)
		}
		// The one-at-a-time server forwards one row at a time; a
		// forward is within its iteration, and the engine's time within
		// the level's (give or take the timing of the two clocks).
		if e := l.Engine; e == nil || e.RowsPerForward < 1 || (wantServer == "one-at-a-time" && e.RowsPerForward != 1) ||
			e.RowsPerForward > float64(wantClients) || !(e.ForwardMS > 0 && e.ForwardMS <= e.IterationMS) || !(e.Busy > 0 && e.Busy <= 1.05) {
			t.Errorf("level %d: engine %+v", i, l.Engine)
		}
		// The model's rate is its rows' operations over the level: about
		// two forwards (steps) per image, against a positive peak.
		if want := l.ImagesPerS * 2 * float64(flops) / 1e9; l.Engine == nil || !(l.Engine.GFLOPS > want/2 && l.Engine.GFLOPS < 2*want) || !(l.GEMMPeak > 0) {
			t.Errorf("level %d: engine %+v, %g GFLOP/s expected, GEMM peak %g", i, l.Engine, want, l.GEMMPeak)
		}
		// The baseline has one worker with every thread; the batching
		// server's workers (one per thread by default) share them.
		if (wantServer == "one-at-a-time" && (l.Workers != 1 || l.Threads != rep.Threads)) ||
			(wantServer == "batched" && (l.Workers != min(rep.Threads, maxDefaultWorkers) || l.Threads != max(1, rep.Threads/l.Workers))) {
			t.Errorf("level %d: %d workers of %d threads (of %d)", i, l.Workers, l.Threads, rep.Threads)
		}
	}
	// Each round's ratio pairs the servers of that round.
	if len(rep.Ratios) != 2 {
		t.Fatalf("ratios %+v", rep.Ratios)
	}
	for i, r := range rep.Ratios {
		if r.Clients != []int{1, 3}[i] || len(r.Rounds) != 2 || r.Median != (r.Rounds[0]+r.Rounds[1])/2 {
			t.Errorf("ratio %+v", r)
		}
		for round, got := range r.Rounds {
			if want := rep.Levels[4+2*i+round].ImagesPerS / rep.Levels[2*i+round].ImagesPerS; got != want {
				t.Errorf("%d clients, round %d: ratio %g, want %g", r.Clients, round+1, got, want)
			}
		}
	}
	for _, args := range [][]string{
		{"loadtest", "--clients", "0"},
		{"loadtest", "--rounds", "0"},
		{"loadtest", "--rounds", "101"},
		{"loadtest", "--clients", "1,x"},
		{"loadtest", "--duration", "0s"},
		{"loadtest", "--sampler", "euler"},
		{"loadtest", "--workers", "-1"},
		{"loadtest", "--baseline-threads", "0"},
		{"loadtest", "--url", "http://127.0.0.1:1", "--model", "x"},
		{"loadtest", "--model", "x", "--preset", "small"},
		{"loadtest", "--max-batch", "1000000"},
		{"loadtest", "--workers", "100000"},
		// Not there: one line, not a table of thousands of failures.
		{"loadtest", "--url", "http://127.0.0.1:1"},
	} {
		code, _, errOut := ddpm(t, args...)
		if code != 1 || strings.Count(errOut, "\n") != 1 {
			t.Errorf("%v: exit %d, %q", args, code, errOut)
		}
	}
}

// --url loads another server: its table and JSON say nothing of memory
// (this process's would mislead).
func TestLoadtestURL(t *testing.T) {
	p, closeModel, err := presetPipeline("tiny", pipeline.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer closeModel()
	_, url, stop, err := serveLoopback(p, serve.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	args := []string{"loadtest", "--url", url, "--clients", "2", "--duration", "300ms", "--steps", "2"}
	code, out, errOut := ddpm(t, args...)
	if code != 0 || !strings.Contains(out, url+"  -") || strings.Contains(out, "memory MiB") {
		t.Errorf("exit %d, %s\n%s", code, out, errOut)
	}
	code, out, errOut = ddpm(t, append(args, "--json")...)
	var rep loadReport
	if code != 0 || json.Unmarshal([]byte(out), &rep) != nil || len(rep.Levels) != 1 || rep.Levels[0].Requests < 1 ||
		rep.Levels[0].Memory != nil || strings.Contains(out, `"memory"`) {
		t.Errorf("--json: exit %d, %s\n%s", code, out, errOut)
	}
}

func TestPercentile(t *testing.T) {
	v := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for q, want := range map[float64]float64{0.5: 5, 0.95: 10, 0.99: 10, 0.1: 1, 0.11: 2} {
		if got := percentile(v, q); got != want {
			t.Errorf("q %g: %g, want %g", q, got, want)
		}
	}
	if percentile(nil, 0.5) != 0 {
		t.Error("empty")
	}
}

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		v    []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{3, 1, 2}, 2}, {[]float64{4, 1, 3, 2}, 2.5}} {
		in := slices.Clone(c.v)
		if got := median(c.v); got != c.want || !slices.Equal(in, c.v) {
			t.Errorf("median(%v) = %g, want %g (input left %v)", in, got, c.want, c.v)
		}
	}
}
