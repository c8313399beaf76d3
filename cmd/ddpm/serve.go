package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/urfave/cli/v2"

	"github.com/ddpm-go/ddpm/diffusion/checkpoint"
	"github.com/ddpm-go/ddpm/diffusion/pipeline"
	"github.com/ddpm-go/ddpm/diffusion/serve"
	"github.com/ddpm-go/ddpm/torch"
)

var serveCommand = &cli.Command{
	Name:  "serve",
	Usage: "serve models over HTTP/JSON, batching the denoising steps of concurrent requests",
	Description: `POST /v1/images/generations {"model", "n", "seed", "sampler", "steps", "eta",
"spacing", "class", "guidance", "response_format": "png_base64" | "raw_float32_base64" |
"png" | "npy", "stream": true for server-sent progress events, "preview_every": k
with it for x_0 previews every k steps};
GET /v1/models, /healthz, /readyz, /metrics (Prometheus). With --token (or
DDPM_SERVE_TOKEN) every endpoint but /healthz and /readyz needs
"Authorization: Bearer TOKEN". Each model warms up first (--warmup; /readyz
answers 503 until "ready"). SIGTERM or Ctrl-C stops admitting, lets the
requests in flight finish (at most --drain-timeout) and exits.`,
	Flags: []cli.Flag{
		&cli.StringSliceFlag{Name: "model", Usage: "NAME=PATH, repeatable: a run directory, a checkpoint or a diffusers folder", EnvVars: []string{"DDPM_SERVE_MODEL"}},
		&cli.StringFlag{Name: "addr", Value: "127.0.0.1:8080", Usage: "HOST:PORT to listen on (0.0.0.0:PORT: every interface)", EnvVars: []string{"DDPM_SERVE_ADDR"}},
		&cli.IntFlag{Name: "max-batch", Value: serve.DefaultMaxBatch, Usage: fmt.Sprintf("model rows per forward (a guided image takes two), at most %d", maxServeBatch), EnvVars: []string{"DDPM_SERVE_MAX_BATCH"}},
		&cli.IntFlag{Name: "queue", Value: serve.DefaultQueueSize, Usage: "requests waiting per model before 429", EnvVars: []string{"DDPM_SERVE_QUEUE"}},
		&cli.IntFlag{Name: "max-images", Value: serve.DefaultMaxImages, Usage: fmt.Sprintf("largest n of a request, at most %d", maxServeImages), EnvVars: []string{"DDPM_SERVE_MAX_IMAGES"}},
		&cli.IntFlag{Name: "max-steps", Value: serve.DefaultMaxSteps, Usage: "most sampler steps of a request", EnvVars: []string{"DDPM_SERVE_MAX_STEPS"}},
		&cli.DurationFlag{Name: "timeout", Value: 5 * time.Minute, Usage: "longest a request may wait and sample (0: no limit)", EnvVars: []string{"DDPM_SERVE_TIMEOUT"}},
		&cli.StringFlag{Name: "token", Usage: "bearer token required by every endpoint but /healthz and /readyz", EnvVars: []string{"DDPM_SERVE_TOKEN"}},
		&cli.DurationFlag{Name: "drain-timeout", Value: 30 * time.Second, Usage: "longest shutdown waits for requests in flight", EnvVars: []string{"DDPM_SERVE_DRAIN_TIMEOUT"}},
		&cli.StringFlag{Name: "weights", Value: "ema", Usage: "ema or model (checkpoints)", EnvVars: []string{"DDPM_WEIGHTS"}},
		&cli.StringFlag{Name: "device", Value: "auto", Usage: "cpu, cuda, cuda:N or auto", EnvVars: []string{"DDPM_DEVICE"}},
		&cli.IntFlag{Name: "threads", Usage: "intra-op CPU threads, divided among each model's workers (default: every CPU, or OMP_NUM_THREADS)", EnvVars: []string{"DDPM_THREADS"}},
		&cli.BoolFlag{Name: "warmup", Value: true, Usage: "on start, run one forward of every row count up to --max-batch of each model, /readyz answering 503 meanwhile, so that no request pays for what libtorch makes on a shape's first use (--warmup=false: ready at once)", EnvVars: []string{"DDPM_SERVE_WARMUP"}},
		&cli.StringFlag{Name: "log", Value: "text", Usage: "access log on stderr, a line per request (ID, status, seconds, model, n, seed, sampler, steps, error): text, json or off", EnvVars: []string{"DDPM_SERVE_LOG"}},
		workersFlag,
		precisionFlag,
	},
	Action: runServe,
}

// workersFlag is --workers of serve and loadtest.
var workersFlag = &cli.IntFlag{Name: "workers", Usage: fmt.Sprintf("scheduler goroutines per model, each batching its own requests' steps, each with its share of --threads, at most %d (default: on a CPU one per thread, at most %d; on CUDA 1)", maxWorkers, maxDefaultWorkers), EnvVars: []string{"DDPM_SERVE_WORKERS"}}

// Bounds of serve's (and loadtest's) limits.
const (
	// maxServeBatch bounds --max-batch: the warm-up runs one forward of
	// every row count up to it before the server is ready, 524800 rows in
	// all at 1024; at a million the server never became ready.
	maxServeBatch = 1024
	// maxServeImages bounds --max-images: a request's images are held as
	// float32 pixels (n*C*H*W*4 bytes) and answered in one response; 1024
	// images of 256x256x3 are 768 MiB, and a larger n is for ddpm sample.
	maxServeImages = 1024
)

// maxDefaultWorkers bounds --workers' default. A worker per intra-op
// thread served the small and cifar10 presets fastest on 2 CPUs (a
// forward's threads mostly wait for each other there: cifar10 at batch 1
// took as long on 2 threads as on 1); on more CPUs a lone request would
// run on a small share of them, so the default stops at 4 workers and
// gives each the rest of the threads.
const maxDefaultWorkers = 4

// resolveWorkers reads --workers for a model on dev and divides the
// intra-op threads (torch.NumThreads, already set from --threads) among
// them: it returns the workers and each one's share, for the caller to set.
func resolveWorkers(c *cli.Context, dev torch.Device) (workers, threads int, err error) {
	all := torch.NumThreads()
	workers = c.Int("workers")
	if err := checkRange("workers", workers, 0, maxWorkers); err != nil {
		return 0, 0, fmt.Errorf("%w (0: the default)", err)
	}
	switch {
	case workers == 0 && dev.Type == torch.DeviceCPU:
		workers = min(all, maxDefaultWorkers)
	case workers == 0:
		workers = 1
	}
	return workers, workerThreads(all, workers), nil
}

// checkListenAddr refuses an --addr without a host: net.Listen would take
// "" or ":8080" as every interface, and serving beyond this machine must be
// asked for (0.0.0.0:PORT).
func checkListenAddr(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	switch {
	case addr == "":
		return errors.New("--addr is empty: give HOST:PORT, e.g. 127.0.0.1:8080 (0.0.0.0:8080 for every interface)")
	case err != nil:
		return fmt.Errorf("--addr %q: want HOST:PORT, e.g. 127.0.0.1:8080", addr)
	case host == "":
		return fmt.Errorf("--addr %q has no host: give 127.0.0.1%s for this machine, or 0.0.0.0%s for every interface", addr, addr, addr)
	}
	return nil
}

// workerThreads is each worker's share of threads intra-op threads: at
// least one.
func workerThreads(threads, workers int) int { return max(1, threads/max(1, workers)) }

// accessLogger is --log's logger, writing to w (nil for off).
func accessLogger(format string, w io.Writer) (*slog.Logger, error) {
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, nil)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, nil)), nil
	case "off":
		return nil, nil
	}
	return nil, fmt.Errorf("--log %q: want text, json or off", format)
}

// servedModel is one --model: its pipeline and the engine batching it.
type servedModel struct {
	name   string
	path   string
	p      *pipeline.Pipeline
	engine *serve.Engine
}

func runServe(c *cli.Context) error {
	specs := c.StringSlice("model")
	if len(specs) == 0 {
		return errors.New("serve: give at least one --model NAME=PATH")
	}
	if c.Int("queue") < 1 || c.Int("max-steps") < 1 {
		return errors.New("serve: --queue and --max-steps must be at least 1")
	}
	if err := checkRange("max-batch", c.Int("max-batch"), 1, maxServeBatch); err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	if err := checkRange("max-images", c.Int("max-images"), 1, maxServeImages); err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	if c.Duration("timeout") < 0 || c.Duration("drain-timeout") < 0 {
		return errors.New("serve: --timeout and --drain-timeout must be non-negative")
	}
	if err := checkListenAddr(c.String("addr")); err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	logger, err := accessLogger(c.String("log"), c.App.ErrWriter)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	w, err := checkpoint.ParseWeights(c.String("weights"))
	if err != nil {
		return fmt.Errorf("--weights: %w", err)
	}
	po, err := pipelineOptions(c)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	po.Weights = w
	workers, threads, err := resolveWorkers(c, po.Device)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	if err := torch.SetNumThreads(threads); err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics, err := serve.NewMetrics(reg)
	if err != nil {
		return err
	}
	eo := serve.Options{MaxBatch: c.Int("max-batch"), QueueSize: c.Int("queue"), MaxImages: c.Int("max-images"),
		MaxSteps: c.Int("max-steps"), Timeout: c.Duration("timeout"), Metrics: metrics, Workers: workers}
	var models []*servedModel
	defer func() {
		for _, m := range models {
			m.engine.Close()
			m.p.Close()
		}
	}()
	for _, spec := range specs {
		name, path, ok := strings.Cut(spec, "=")
		if !ok || name == "" || path == "" || strings.ContainsAny(name, " /?#") {
			return fmt.Errorf("serve: --model %q: want NAME=PATH (a name without spaces or slashes)", spec)
		}
		if slices.ContainsFunc(models, func(m *servedModel) bool { return m.name == name }) {
			return fmt.Errorf("serve: --model %s given twice", name)
		}
		p, err := loadServedModel(path, po)
		if err != nil {
			return fmt.Errorf("serve: model %s: %w", name, err)
		}
		eo.Name = name
		e, err := serve.New(p, eo)
		if err != nil {
			p.Close()
			return err
		}
		models = append(models, &servedModel{name: name, path: path, p: p, engine: e})
	}
	served := make([]serve.Model, len(models))
	for i, m := range models {
		served[i] = serve.Model{Name: m.name, Engine: m.engine}
	}
	h, err := serve.NewHandler(served, serve.HandlerOptions{Token: c.String("token"), Metrics: metrics, Gatherer: reg,
		Logger: logger})
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", c.String("addr"))
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	srv := newHTTPServer(h, 10*time.Second)
	names := make([]string, len(models))
	for i, m := range models {
		names[i] = m.name
	}
	fmt.Fprintf(c.App.Writer, "ddpm serve: listening on http://%s (models: %s; %d workers of %d threads each)\n", ln.Addr(), joinNames(names), workers, threads)

	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	stopped := make(chan error, 1)
	go func() { stopped <- srv.Serve(ln) }()
	if c.Bool("warmup") {
		err := h.Warmup(ctx, func(model string, d time.Duration) {
			fmt.Fprintf(c.App.Writer, "ddpm serve: model %s warmed up in %.2f s (a forward of each row count up to %d)\n",
				model, d.Seconds(), eo.MaxBatch)
		})
		switch {
		case ctx.Err() != nil: // stopped while warming up: drain below
		case err != nil:
			srv.Close()
			return fmt.Errorf("serve: %w", err)
		default:
			fmt.Fprintln(c.App.Writer, "ddpm serve: ready")
		}
	}
	select {
	case err := <-stopped:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	stop()
	fmt.Fprintf(c.App.Writer, "ddpm serve: stopping: no new requests, finishing those in flight (at most %s)\n", c.Duration("drain-timeout"))
	h.Drain()
	drain, cancel := context.WithTimeout(context.Background(), c.Duration("drain-timeout"))
	defer cancel()
	// Engines first: their requests finish (or are cut at the deadline)
	// and answer, then the HTTP server's handlers return.
	for _, m := range models {
		m.engine.Shutdown(drain)
	}
	if err := srv.Shutdown(drain); err != nil {
		srv.Close()
	}
	fmt.Fprintln(c.App.Writer, "ddpm serve: stopped")
	return nil
}

// newHTTPServer is the server over h: a client gets readTimeout to send its
// headers and three times that for the whole request, so that a slow one
// holds no connection for long (the handler bounds each write).
func newHTTPServer(h http.Handler, readTimeout time.Duration) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: readTimeout, ReadTimeout: 3 * readTimeout, IdleTimeout: 2 * time.Minute}
}

// loadServedModel loads PATH: a diffusers folder (it has a scheduler
// config), a run directory (its newest checkpoint) or a checkpoint file.
func loadServedModel(path string, o pipeline.Options) (*pipeline.Pipeline, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return pipeline.Load(path, o)
	}
	for _, f := range []string{"scheduler_config.json", filepath.Join("scheduler", "scheduler_config.json")} {
		if _, err := os.Stat(filepath.Join(path, f)); err == nil {
			return pipeline.LoadDiffusers(path, o)
		}
	}
	ckpt, err := checkpoint.Latest(path)
	if err != nil {
		return nil, err
	}
	return pipeline.Load(ckpt, o)
}
