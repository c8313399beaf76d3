package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/diffusion/pipeline"
	"github.com/ddpm-go/ddpm/diffusion/sampler"
	"github.com/ddpm-go/ddpm/diffusion/serve"
	"github.com/ddpm-go/ddpm/diffusion/serve/api"
	"github.com/ddpm-go/ddpm/diffusion/serve/client"
	"github.com/ddpm-go/ddpm/diffusion/unet"
	"github.com/ddpm-go/ddpm/torch"
)

var loadtestCommand = &cli.Command{
	Name:  "loadtest",
	Usage: "load a sampling server with concurrent clients: images/s and latency percentiles, step-level batching against one request at a time",
	Description: `Without --url it serves the model itself on loopback twice, in one run: with
step-level batching (--max-batch rows per forward) and one request at a time (the
baseline), the two taking turns at each level (--rounds times: the machine's speed
drifts, and each round's ratio compares servers that ran side by side; the ratio's
median over the rounds is printed last), and times a direct pipeline call for
the same request. With --url it
loads that server only. Each client sends its next request when the last is
answered, for --duration at each --clients level.`,
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "model", Usage: "a run directory, checkpoint or diffusers folder (default: --preset with random weights)"},
		&cli.StringFlag{Name: "preset", Value: "small", Usage: "model preset when no --model: " + joinNames(unet.PresetNames())},
		&cli.StringFlag{Name: "url", Usage: "load this server (http://HOST:PORT) instead of serving the model here"},
		&cli.StringFlag{Name: "token", Usage: "bearer token for --url", EnvVars: []string{"DDPM_SERVE_TOKEN"}},
		&cli.StringFlag{Name: "clients", Value: "1,4,16,64", Usage: "concurrent clients, comma-separated levels"},
		&cli.DurationFlag{Name: "duration", Value: 20 * time.Second, Usage: "time at each level (each round)"},
		&cli.IntFlag{Name: "rounds", Value: 1, Usage: "times each level runs, the servers taking turns: each round's batched / one-at-a-time ratio and their median"},
		&cli.IntFlag{Name: "n", Value: 1, Usage: "images per request"},
		&cli.StringFlag{Name: "sampler", Value: "ddim", Usage: "sampler of every request"},
		&cli.IntFlag{Name: "steps", Value: 20, Usage: "sampler steps of every request"},
		&cli.IntFlag{Name: "max-batch", Value: serve.DefaultMaxBatch, Usage: fmt.Sprintf("model rows per forward of the batching server, at most %d", maxServeBatch)},
		workersFlag,
		&cli.BoolFlag{Name: "no-baseline", Usage: "skip the one-request-at-a-time server"},
		&cli.IntFlag{Name: "baseline-threads", Usage: "intra-op threads of the one-request-at-a-time server (default: --threads)"},
		&cli.StringFlag{Name: "device", Value: "auto", Usage: "cpu, cuda, cuda:N or auto"},
		&cli.IntFlag{Name: "threads", Usage: "intra-op CPU threads of the direct call and the one-at-a-time server, divided among the batching server's workers (default: every CPU, or OMP_NUM_THREADS)"},
		precisionFlag,
		&cli.BoolFlag{Name: "json", Usage: "print one JSON object"},
	},
	Action: runLoadtest,
}

// loadLevel is the result of one level of load.
type loadLevel struct {
	Server     string  `json:"server"` // "batched", "one-at-a-time" or the URL
	Workers    int     `json:"workers,omitempty"`
	Threads    int     `json:"threads,omitempty"` // intra-op threads (of each worker)
	Clients    int     `json:"clients"`
	Round      int     `json:"round"` // 1, 2, ... --rounds
	Requests   int     `json:"requests"`
	Errors     int     `json:"errors"`
	FirstError string  `json:"first_error,omitempty"`
	ImagesPerS float64 `json:"images_per_s"`
	P50        float64 `json:"p50_s"`
	P95        float64 `json:"p95_s"`
	P99        float64 `json:"p99_s"`
	// Memory after the first minute (or half the level, if shorter) and
	// at the end (a server of this process only).
	Memory []memSnapshot `json:"memory,omitempty"`
	// RSSByMinute is the resident memory at the end of each whole minute,
	// MiB: whether a long level's memory levels off or keeps growing (a
	// server of this process only).
	RSSByMinute []float64 `json:"rss_mib_by_minute,omitempty"`
	// Engine is where the served model's time went (a server of this
	// process only).
	Engine *engineLoad `json:"engine,omitempty"`
	// GEMMPeak is the GFLOP/s of square matmuls in the model's arithmetic,
	// one from each worker at once on its threads (a server of this
	// process only): the yardstick of its forwards' rate, which oneDNN's
	// convolutions can pass.
	GEMMPeak float64 `json:"gemm_peak_gflops,omitempty"`
}

// engineLoad is what the engine did over a level: model rows per forward,
// the mean forward and iteration (forward and sampler steps) times, the
// share of the level it spent iterating, and the model's floating-point
// rate over the level (its rows times pipeline.Info.ForwardFLOPs; zero when
// the model does not say). An iteration is counted before it answers its
// finished requests, so a level's last answers come with its whole time.
type engineLoad struct {
	RowsPerForward float64 `json:"rows_per_forward"`
	ForwardMS      float64 `json:"forward_ms"`
	IterationMS    float64 `json:"iteration_ms"`
	Busy           float64 `json:"busy"`
	GFLOPS         float64 `json:"gflops,omitempty"`
}

// engineLoadBetween is the engine's work between two of its Stats, over
// elapsed, for a model of flops a row; Busy is the share of its workers'
// time.
func engineLoadBetween(a, b serve.Stats, elapsed time.Duration, flops int64) *engineLoad {
	f := float64(b.Forwards - a.Forwards)
	if f == 0 {
		return &engineLoad{}
	}
	rows := float64(b.Rows - a.Rows)
	return &engineLoad{
		RowsPerForward: rows / f,
		ForwardMS:      1000 * (b.ForwardTime - a.ForwardTime).Seconds() / f,
		IterationMS:    1000 * (b.StepTime - a.StepTime).Seconds() / f,
		Busy:           (b.StepTime - a.StepTime).Seconds() / elapsed.Seconds() / float64(len(b.WorkerRows)),
		GFLOPS:         rows * float64(flops) / elapsed.Seconds() / 1e9,
	}
}

// memSnapshot is the process's memory, MiB: resident, libtorch's CPU
// tensors in use and the freed blocks its cache keeps, and the Go heap.
type memSnapshot struct {
	RSS         float64 `json:"rss_mib"`
	TensorsUsed float64 `json:"tensors_in_use_mib"`
	CachedFree  float64 `json:"cached_free_blocks_mib"`
	GoHeap      float64 `json:"go_heap_mib"`
}

func snapshotMemory() memSnapshot {
	const mib = 1 << 20
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m := memSnapshot{RSS: float64(currentRSS()) / mib, GoHeap: float64(ms.HeapInuse) / mib}
	if c, err := torch.CPUCache(); err == nil {
		m.TensorsUsed, m.CachedFree = float64(c.InUseBytes)/mib, float64(c.CachedBytes)/mib
	}
	return m
}

type loadReport struct {
	Request   string      `json:"request"`
	Threads   int         `json:"threads"`
	Precision string      `json:"precision,omitempty"`
	DirectS   float64     `json:"direct_pipeline_s,omitempty"`
	Levels    []loadLevel `json:"levels"`
	// Ratios is the batched server's images/s over the one-at-a-time
	// server's at each level (with both servers).
	Ratios []loadRatio `json:"ratios,omitempty"`
}

// loadRatio is the batched / one-at-a-time ratio of images/s at one level:
// each round's, and their median.
type loadRatio struct {
	Clients int       `json:"clients"`
	Rounds  []float64 `json:"rounds"`
	Median  float64   `json:"median"`
}

// baselines is the one-at-a-time server's images/s at each level and round
// ({clients, round}).
func baselines(levels []loadLevel) map[[2]int]float64 {
	base := map[[2]int]float64{}
	for _, l := range levels {
		if l.Server == "one-at-a-time" {
			base[[2]int{l.Clients, l.Round}] = l.ImagesPerS
		}
	}
	return base
}

// loadRatios pairs each level and round of the batched server with the
// one-at-a-time server's, in the order of levels.
func loadRatios(levels []loadLevel) []loadRatio {
	base := baselines(levels)
	var out []loadRatio
	at := map[int]int{} // clients -> index in out
	for _, l := range levels {
		b := base[[2]int{l.Clients, l.Round}]
		if l.Server != "batched" || b <= 0 {
			continue
		}
		i, ok := at[l.Clients]
		if !ok {
			i, at[l.Clients] = len(out), len(out)
			out = append(out, loadRatio{Clients: l.Clients})
		}
		out[i].Rounds = append(out[i].Rounds, l.ImagesPerS/b)
	}
	for i := range out {
		out[i].Median = median(out[i].Rounds)
	}
	return out
}

// median is the middle value of v (the mean of the two middle ones for an
// even count), 0 if none; v is left as it was.
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(v))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func runLoadtest(c *cli.Context) error {
	levels, err := parseLevels(c.String("clients"))
	if err != nil {
		return err
	}
	if c.Duration("duration") <= 0 || c.Int("n") < 1 || c.Int("steps") < 1 {
		return errors.New("loadtest: --duration, --n and --steps must be positive")
	}
	if err := checkRange("max-batch", c.Int("max-batch"), 1, maxServeBatch); err != nil {
		return fmt.Errorf("loadtest: %w", err)
	}
	rounds := c.Int("rounds")
	if rounds < 1 || rounds > 100 {
		return fmt.Errorf("loadtest: --rounds %d: want 1 to 100", rounds)
	}
	if c.IsSet("baseline-threads") {
		if err := checkRange("baseline-threads", c.Int("baseline-threads"), 1, maxThreads); err != nil {
			return fmt.Errorf("loadtest: %w", err)
		}
	}
	// --preset is the model without --model, and --url loads a model
	// already served.
	for _, pair := range [][]string{{"url", "model"}, {"url", "preset"}, {"model", "preset"}} {
		if err := onlyOne(c, pair...); err != nil {
			return fmt.Errorf("loadtest: %w", err)
		}
	}
	kind, err := sampler.ParseKind(c.String("sampler"))
	if err != nil {
		return fmt.Errorf("--sampler: %w", err)
	}
	n := c.Int("n")
	req := api.GenerationRequest{N: &n, Sampler: string(kind), Steps: c.Int("steps")}
	rep := loadReport{Request: fmt.Sprintf("n=%d, %s, %d steps", n, kind, req.Steps)}
	// run loads url with clients; engine, if not nil, is the engine behind
	// it, its workers running threads intra-op threads each, with the GEMM
	// peak of those workers and threads.
	run := func(server, url, token string, clients, round int, engine *serve.Engine, threads int, peak float64) error {
		var before serve.Stats
		if engine != nil {
			before = engine.Stats()
		}
		t0 := time.Now()
		l, err := loadAt(c.Context, url, token, req, clients, c.Duration("duration"))
		if err != nil {
			return err
		}
		if engine != nil {
			l.Engine = engineLoadBetween(before, engine.Stats(), time.Since(t0), engine.Pipeline().Info().ForwardFLOPs)
			l.Workers, l.Threads, l.GEMMPeak = engine.Options().Workers, threads, peak
		} else {
			// This process's memory says nothing of another server's.
			l.Memory, l.RSSByMinute = nil, nil
		}
		l.Server, l.Round = server, round
		rep.Levels = append(rep.Levels, l)
		if !c.Bool("json") {
			fmt.Fprintf(c.App.ErrWriter, "loadtest: %s: %.2f images/s\n", levelName(l, rounds), l.ImagesPerS)
		}
		return nil
	}
	if url := c.String("url"); url != "" {
		if err := checkReachable(c.Context, url, c.String("token")); err != nil {
			return err
		}
		for _, clients := range levels {
			for round := 1; round <= rounds; round++ {
				if err := run(url, strings.TrimRight(url, "/"), c.String("token"), clients, round, nil, 0, 0); err != nil {
					return err
				}
			}
		}
		return printLoad(c, rep)
	}

	po, err := pipelineOptions(c)
	if err != nil {
		return err
	}
	rep.Threads, rep.Precision = torch.NumThreads(), string(po.Precision)
	// The batching server's workers (--workers, or serve's default), each
	// with its share of the threads: a bad --workers is refused before the
	// model is built.
	workers, share, err := resolveWorkers(c, po.Device)
	if err != nil {
		return fmt.Errorf("loadtest: %w", err)
	}
	p, closeModel, err := loadtestPipeline(c, po)
	if err != nil {
		return err
	}
	defer closeModel()
	so := p.DefaultSampling()
	so.Sampler, so.Spacing, so.Steps = kind, "", c.Int("steps")
	// The direct call: what a request costs without a server (median of 3
	// after one warm-up).
	var times []float64
	for i := range 4 {
		t0 := time.Now()
		if _, err := p.Generate(c.Context, c.Int("n"), pipeline.GenerateOptions{Seed: uint64(i), Sampling: so}); err != nil {
			return fmt.Errorf("loadtest: %w", err)
		}
		if i > 0 {
			times = append(times, time.Since(t0).Seconds())
		}
	}
	slices.Sort(times)
	rep.DirectS = times[1]

	type server struct {
		name                       string
		maxBatch, workers, threads int
	}
	servers := []server{{"batched", c.Int("max-batch"), workers, share}}
	if !c.Bool("no-baseline") {
		// One request's rows per forward and one worker: the engine admits
		// one request at a time, which is serving them one after the other.
		// It has every thread, as the direct call had, unless told.
		threads := rep.Threads
		if c.IsSet("baseline-threads") {
			threads = c.Int("baseline-threads")
		}
		servers = append([]server{{"one-at-a-time", c.Int("n"), 1, threads}}, servers...)
	}
	dt := torch.Float32
	if low, ok := po.Precision.Autocast(); ok {
		dt = low
	}
	peaks := make([]float64, len(servers))
	for i, s := range servers {
		if err := torch.SetNumThreads(s.threads); err != nil {
			return err
		}
		if peaks[i], err = gemmGFLOPS(p.Device(), dt, s.workers); err != nil {
			return fmt.Errorf("loadtest: %w", err)
		}
	}
	// The servers take turns at each level, so that the machine's speed,
	// which drifts over minutes, falls on both alike.
	for _, clients := range levels {
		for round := 1; round <= rounds; round++ {
			for i, s := range servers {
				if err := runServer(p, s.maxBatch, s.workers, s.threads, 4*slices.Max(levels), func(e *serve.Engine, url string) error {
					return run(s.name, url, "", clients, round, e, s.threads, peaks[i])
				}); err != nil {
					return err
				}
			}
		}
	}
	// Reported server by server.
	order := map[string]int{}
	for i, s := range servers {
		order[s.name] = i
	}
	slices.SortStableFunc(rep.Levels, func(a, b loadLevel) int { return order[a.Server] - order[b.Server] })
	rep.Ratios = loadRatios(rep.Levels)
	return printLoad(c, rep)
}

// checkReachable fails in one line when the server at url does not answer
// its model list (not there, or the token refused): its load levels would
// only count failures, thousands a second.
func checkReachable(ctx context.Context, url, token string) error {
	cl, err := client.New(strings.TrimRight(url, "/"), client.Options{Token: token})
	if err != nil {
		return fmt.Errorf("loadtest: --url: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := cl.Models(ctx); err != nil {
		return fmt.Errorf("loadtest: --url %s does not answer: %w", url, err)
	}
	return nil
}

// runServer serves p with maxBatch rows per forward and workers workers of
// threads threads each on loopback, with an empty CPU cache, and calls load
// with its engine and URL before stopping it.
func runServer(p *pipeline.Pipeline, maxBatch, workers, threads, queue int, load func(*serve.Engine, string) error) error {
	if err := torch.SetNumThreads(threads); err != nil {
		return err
	}
	// No cached memory blocks: neither the GEMMs' nor the other server's
	// count in the level's memory.
	if _, err := torch.TrimCPUCache(0); err != nil {
		return fmt.Errorf("loadtest: %w", err)
	}
	e, url, stop, err := serveLoopback(p, serve.Options{MaxBatch: maxBatch, Workers: workers, QueueSize: queue})
	if err != nil {
		return err
	}
	defer stop()
	return load(e, url)
}

// loadtestPipeline is --model's pipeline, or --preset's U-Net with random
// weights (the speed of a forward does not depend on them).
func loadtestPipeline(c *cli.Context, o pipeline.Options) (*pipeline.Pipeline, func(), error) {
	if path := c.String("model"); path != "" {
		p, err := loadServedModel(path, o)
		if err != nil {
			return nil, nil, fmt.Errorf("loadtest: %w", err)
		}
		return p, func() { p.Close() }, nil
	}
	return presetPipeline(c.String("preset"), o)
}

// presetPipeline is a pipeline over the named preset's U-Net with random
// weights and the default schedule, and the function that frees both.
func presetPipeline(preset string, o pipeline.Options) (*pipeline.Pipeline, func(), error) {
	cfg, err := unet.Preset(preset)
	if err != nil {
		return nil, nil, err
	}
	u, err := unet.New(cfg, o.Device, torch.Float32, nil)
	if err != nil {
		return nil, nil, err
	}
	sched, err := diffusion.NewSchedule(diffusion.DefaultScheduleConfig())
	if err != nil {
		u.Close()
		return nil, nil, err
	}
	p, err := pipeline.New(u, sched, pipeline.Info{Channels: cfg.InChannels, Size: cfg.ImageSize}, o)
	if err != nil {
		u.Close()
		return nil, nil, err
	}
	return p, func() { p.Close(); u.Close() }, nil
}

// serveLoopback serves p on a loopback port and returns its engine, its
// URL and the function that stops it.
func serveLoopback(p *pipeline.Pipeline, o serve.Options) (*serve.Engine, string, func(), error) {
	e, err := serve.New(p, o)
	if err != nil {
		return nil, "", nil, err
	}
	if _, err := e.Warmup(context.Background()); err != nil { // as ddpm serve does
		e.Close()
		return nil, "", nil, err
	}
	h, err := serve.NewHandler([]serve.Model{{Name: "m", Engine: e}}, serve.HandlerOptions{})
	if err != nil {
		e.Close()
		return nil, "", nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.Close()
		return nil, "", nil, fmt.Errorf("loadtest: %w", err)
	}
	srv := newHTTPServer(h, 10*time.Second)
	go srv.Serve(ln)
	return e, "http://" + ln.Addr().String(), func() { srv.Close(); e.Close() }, nil
}

// loadAt runs clients concurrent clients against url for d, each sending
// its next request when the last is answered, and measures.
func loadAt(ctx context.Context, url, token string, req api.GenerationRequest, clients int, d time.Duration) (loadLevel, error) {
	l := loadLevel{Clients: clients, Memory: make([]memSnapshot, 2)}
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: 0}}
	defer hc.CloseIdleConnections()
	c, err := client.New(url, client.Options{Token: token, HTTPClient: hc})
	if err != nil {
		return l, fmt.Errorf("loadtest: %w", err)
	}
	var mu sync.Mutex
	var lat []float64
	seed := uint64(0)
	memAt := min(time.Minute, d/2)
	memTaken := false
	start := time.Now()
	end := start.Add(d)
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) && ctx.Err() == nil {
				mu.Lock()
				seed++
				s := seed
				mu.Unlock()
				t0 := time.Now()
				r := req
				r.Seed = &s
				_, err := c.Generate(ctx, r)
				dt := time.Since(t0).Seconds()
				mu.Lock()
				l.Requests++
				if err != nil {
					l.Errors++
					if l.FirstError == "" {
						l.FirstError = err.Error()
					}
				} else {
					lat = append(lat, dt)
				}
				if !memTaken && time.Since(start) >= memAt {
					l.Memory[0], memTaken = snapshotMemory(), true
				}
				if time.Since(start) >= time.Duration(len(l.RSSByMinute)+1)*time.Minute {
					l.RSSByMinute = append(l.RSSByMinute, float64(currentRSS())/(1<<20))
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return l, err
	}
	elapsed := time.Since(start).Seconds()
	l.Memory[1] = snapshotMemory()
	l.ImagesPerS = float64(len(lat)**req.N) / elapsed
	slices.Sort(lat)
	l.P50, l.P95, l.P99 = percentile(lat, 0.50), percentile(lat, 0.95), percentile(lat, 0.99)
	return l, nil
}

// percentile is the q-quantile of sorted values (nearest rank), 0 if none.
func percentile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.999999) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// currentRSS is the process's resident memory now, in bytes (0 where
// /proc is missing).
func currentRSS() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

func parseLevels(s string) ([]int, error) {
	var levels []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 4096 {
			return nil, fmt.Errorf("--clients %q: want comma-separated counts in [1, 4096]", s)
		}
		levels = append(levels, n)
	}
	return levels, nil
}

func printLoad(c *cli.Context, rep loadReport) error {
	if c.Bool("json") {
		return json.NewEncoder(c.App.Writer).Encode(rep)
	}
	w := c.App.Writer
	fmt.Fprintf(w, "request: %s", rep.Request)
	if rep.Threads > 0 {
		fmt.Fprintf(w, "; %d threads, %s", rep.Threads, rep.Precision)
	}
	fmt.Fprintln(w)
	if rep.DirectS > 0 {
		fmt.Fprintf(w, "direct pipeline call: %.3f s\n", rep.DirectS)
	}
	base := baselines(rep.Levels)
	rounds := 1
	for _, l := range rep.Levels {
		rounds = max(rounds, l.Round)
	}
	// The round column only when there are rounds to tell apart.
	round := func(l loadLevel) string {
		if rounds == 1 {
			return ""
		}
		return fmt.Sprintf("%d\t", l.Round)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	head := "server\tworkers x threads\tclients\t"
	if rounds > 1 {
		head += "round\t"
	}
	fmt.Fprintln(tw, head+"requests\terrors\timages/s\tvs one-at-a-time\tp50 s\tp95 s\tp99 s\tp50 vs direct\tRSS MiB (1st min, end)")
	for _, l := range rep.Levels {
		vs, direct := "-", "-"
		if b := base[[2]int{l.Clients, l.Round}]; b > 0 {
			vs = fmt.Sprintf("%.2fx", l.ImagesPerS/b)
		}
		if rep.DirectS > 0 && l.P50 > 0 {
			direct = fmt.Sprintf("%.2fx", l.P50/rep.DirectS)
		}
		wt := "-"
		if l.Workers > 0 {
			wt = fmt.Sprintf("%d x %d", l.Workers, l.Threads)
		}
		rss := "-"
		if len(l.Memory) == 2 {
			rss = fmt.Sprintf("%.0f, %.0f", l.Memory[0].RSS, l.Memory[1].RSS)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s%d\t%d\t%.2f\t%s\t%.3f\t%.3f\t%.3f\t%s\t%s\n", l.Server, wt, l.Clients, round(l), l.Requests,
			l.Errors, l.ImagesPerS, vs, l.P50, l.P95, l.P99, direct, rss)
	}
	tw.Flush()
	if rounds > 1 && len(rep.Ratios) > 0 {
		fmt.Fprintf(w, "batched / one-at-a-time, median of %d rounds (each round's):\n", rounds)
		for _, r := range rep.Ratios {
			each := make([]string, len(r.Rounds))
			for i, v := range r.Rounds {
				each[i] = fmt.Sprintf("%.2f", v)
			}
			fmt.Fprintf(w, "  %d clients: %.2fx (%s)\n", r.Clients, r.Median, strings.Join(each, ", "))
		}
	}
	fmt.Fprintf(w, "engine: model rows per forward, mean forward and iteration (forward and sampler steps) ms, share of the time iterating;\n"+
		"  the model's GFLOP/s and their share of the GEMM peak (%d x %d matmuls, one per worker at once on its threads)\n", gemmSize, gemmSize)
	for _, l := range rep.Levels {
		if e := l.Engine; e != nil {
			fmt.Fprintf(w, "  %s: %.1f rows, %.1f ms, %.1f ms, %.0f%%", levelName(l, rounds),
				e.RowsPerForward, e.ForwardMS, e.IterationMS, 100*e.Busy)
			if e.GFLOPS > 0 && l.GEMMPeak > 0 {
				fmt.Fprintf(w, "; %.0f GFLOP/s, %.0f%% of %.0f", e.GFLOPS, 100*e.GFLOPS/l.GEMMPeak, l.GEMMPeak)
			}
			fmt.Fprintln(w)
		}
	}
	if !slices.ContainsFunc(rep.Levels, func(l loadLevel) bool { return len(l.Memory) == 2 }) {
		return loadErrors(rep.Levels, rounds)
	}
	fmt.Fprintln(w, "memory MiB (1st min -> end): tensors in use, freed blocks cached for reuse, Go heap")
	for _, l := range rep.Levels {
		if len(l.Memory) != 2 {
			continue
		}
		a, b := l.Memory[0], l.Memory[1]
		fmt.Fprintf(w, "  %s: %.0f -> %.0f, %.0f -> %.0f, %.0f -> %.0f\n", levelName(l, rounds),
			a.TensorsUsed, b.TensorsUsed, a.CachedFree, b.CachedFree, a.GoHeap, b.GoHeap)
		if len(l.RSSByMinute) > 1 {
			fmt.Fprintf(w, "  %s, RSS MiB at each minute:", levelName(l, rounds))
			for _, r := range l.RSSByMinute {
				fmt.Fprintf(w, " %.0f", r)
			}
			fmt.Fprintln(w)
		}
	}
	return loadErrors(rep.Levels, rounds)
}

// loadErrors is the first level's failure, if any request failed.
func loadErrors(levels []loadLevel, rounds int) error {
	for _, l := range levels {
		if l.Errors > 0 {
			return fmt.Errorf("loadtest: %s: %d of %d requests failed; first: %s", levelName(l, rounds), l.Errors, l.Requests, l.FirstError)
		}
	}
	return nil
}

// levelName is how the text report names a level: "batched, 16 clients",
// and ", round 2" when there are rounds.
func levelName(l loadLevel, rounds int) string {
	s := fmt.Sprintf("%s, %d clients", l.Server, l.Clients)
	if rounds > 1 {
		s += fmt.Sprintf(", round %d", l.Round)
	}
	return s
}
