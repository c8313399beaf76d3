package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/diffusion/data"
	"github.com/ddpm-go/ddpm/diffusion/train"
	"github.com/ddpm-go/ddpm/diffusion/unet"
	"github.com/ddpm-go/ddpm/torch"
	"github.com/urfave/cli/v2"
)

var benchCommand = &cli.Command{
	Name:  "bench",
	Usage: "time a training step and a denoising step of a preset, with the GFLOP/s they reach next to the machine's GEMM peak",
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "preset", Value: "small", Usage: "model preset: " + joinNames(unet.PresetNames())},
		&cli.IntFlag{Name: "batch", Value: 64, Usage: "images per step"},
		&cli.StringFlag{Name: "device", Value: "auto", Usage: "cpu, cuda, cuda:N or auto"},
		&cli.IntFlag{Name: "threads", Usage: "intra-op CPU threads (default: every CPU, or OMP_NUM_THREADS; a CPU share per rank in distributed runs)"},
		&cli.StringFlag{Name: "precision", Value: "float32", Usage: "the model's arithmetic: float32, bf16 or fp16 (CUDA)"},
		&cli.IntFlag{Name: "workers", Value: 1, Usage: fmt.Sprintf("denoising steps run by this many goroutines at once (at most %d), as a sampling server's workers run their forwards (each on --threads threads): their images/s together, next to the GEMM peak of as many matmuls at once", maxWorkers)},
		&cli.IntFlag{Name: "iters", Value: 5, Usage: "timed iterations of each step"},
		&cli.IntFlag{Name: "warmup", Value: 2, Usage: "untimed iterations first"},
		&cli.BoolFlag{Name: "profile", Usage: "after the timing, run each step --iters times more under libtorch's operator profiler and print the operators that took the most time"},
		&cli.BoolFlag{Name: "json", Usage: "print one JSON object"},
	},
	Action: runBench,
}

// benchResult is what bench prints; --json is read by scripts.
// GFLOP/s count two operations per multiply-add of the convolutions,
// linear layers and attention products (unet.Config.FLOPs); a training step
// is counted as three forwards (the backward computes two products per
// forward product). The GEMM peaks are a square matmul of gemmSize through
// libtorch, in float32 and in the step's low precision.
type benchResult struct {
	Preset           string  `json:"preset"`
	Batch            int     `json:"batch"`
	Device           string  `json:"device"`
	Threads          int     `json:"threads"`
	Workers          int     `json:"workers"` // goroutines running denoising steps at once
	Libtorch         string  `json:"libtorch"`
	Precision        string  `json:"precision"`
	Params           int64   `json:"params"`
	TrainStepS       float64 `json:"train_step_s"`
	SampleStepS      float64 `json:"sample_step_s"`
	TrainImagesPerS  float64 `json:"train_images_per_s"`
	SampleImagesPerS float64 `json:"sample_images_per_s"`
	TrainGFLOPS      float64 `json:"train_gflops"`
	SampleGFLOPS     float64 `json:"sample_gflops"`
	GEMMGFLOPS       float64 `json:"gemm_float32_gflops"`
	LowGEMMGFLOPS    float64 `json:"gemm_low_precision_gflops,omitempty"` // bf16 or fp16, as Precision
	PeakRSSBytes     int64   `json:"peak_rss_bytes"`
	TrainProfile     []opRow `json:"train_profile,omitempty"`  // with --profile
	SampleProfile    []opRow `json:"sample_profile,omitempty"` // with --profile
}

// gemmSize is the side of the square matrices of the GEMM peak.
const gemmSize = 2048

func runBench(c *cli.Context) error {
	batch, iters, warm, workers := c.Int("batch"), c.Int("iters"), c.Int("warmup"), c.Int("workers")
	if batch < 1 || iters < 1 || warm < 0 {
		return fmt.Errorf("--batch and --iters must be at least 1 and --warmup non-negative")
	}
	if err := checkRange("workers", workers, 1, maxWorkers); err != nil {
		return err
	}
	cfg, err := unet.Preset(c.String("preset"))
	if err != nil {
		return err
	}
	precision, err := diffusion.ParsePrecision(c.String("precision"))
	if err != nil {
		return fmt.Errorf("--precision: %w", err)
	}
	dev, err := setupDevice(c.String("device"), c.Int("threads"))
	if err != nil {
		return err
	}
	if err := precision.Check(dev); err != nil {
		return err
	}
	res := benchResult{Preset: c.String("preset"), Batch: batch, Device: dev.String(), Threads: torch.NumThreads(), Workers: workers,
		Libtorch: torch.Version(), Precision: string(precision), Params: cfg.NumParams()}
	shape := []int64{int64(cfg.InChannels), int64(cfg.ImageSize), int64(cfg.ImageSize)}
	profile := c.Bool("profile")
	if profile && dev.Type != torch.DeviceCPU {
		// The profiler times operators on the host: on a GPU that is their
		// launches, with the kernels' time landing on whichever waits.
		return fmt.Errorf("--profile times operators on the CPU; on %s it would time kernel launches (use nsys or the PyTorch profiler there)", dev)
	}
	var trainOps []torch.OpStat
	if res.TrainStepS, trainOps, err = benchTrainStep(c.Context, cfg, dev, precision, batch, shape, warm, iters, profile); err != nil {
		return err
	}

	// The sampling model is built as ddpm sample builds it (on the CPU its
	// memory layout differs from a training model's; see nn.Use).
	model, err := unet.New(cfg, dev, torch.Float32, nil)
	if err != nil {
		return err
	}
	defer model.Close()
	// The sampling step is one denoising forward in inference mode, in the
	// precision a pipeline would run it.
	denoiser := precision.Wrap(model)
	step := func() error {
		s := torch.NewScope(torch.Inference)
		defer s.Close()
		x := s.Randn(append([]int64{int64(batch)}, shape...), torch.Float32, dev, nil)
		t := s.Full([]int64{int64(batch)}, 500, torch.Int64, dev)
		out := denoiser.Forward(s, x, t, nil)
		if err := s.Err(); err != nil {
			return err
		}
		_, err := s.Sum(out, nil, false).Item() // waits for the device
		return err
	}
	// steps runs n steps in each of the workers goroutines at once.
	steps := func(n int) error {
		return atOnce(workers, func(int) error {
			for range n {
				if err := step(); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := steps(warm); err != nil {
		return err
	}
	start := time.Now()
	if err := steps(iters); err != nil {
		return err
	}
	res.SampleStepS = time.Since(start).Seconds() / float64(iters)
	if profile {
		sampleOps, err := profiled(func() error { return steps(iters) })
		if err != nil {
			return err
		}
		res.TrainProfile, res.SampleProfile = profileRows(trainOps, iters), profileRows(sampleOps, iters)
	}
	res.TrainImagesPerS = float64(batch) / res.TrainStepS
	res.SampleImagesPerS = float64(workers*batch) / res.SampleStepS
	flops := float64(cfg.FLOPs()) * float64(batch)
	res.TrainGFLOPS = 3 * flops / res.TrainStepS / 1e9
	res.SampleGFLOPS = float64(workers) * flops / res.SampleStepS / 1e9
	if res.GEMMGFLOPS, err = gemmGFLOPS(dev, torch.Float32, workers); err != nil {
		return err
	}
	if dt, ok := precision.Autocast(); ok {
		if res.LowGEMMGFLOPS, err = gemmGFLOPS(dev, dt, workers); err != nil {
			return err
		}
	}
	res.PeakRSSBytes = peakRSS()

	w := c.App.Writer
	if c.Bool("json") {
		b, _ := json.Marshal(res)
		fmt.Fprintln(w, string(b))
		return nil
	}
	fmt.Fprintf(w, "preset %s, batch %d, device %s, %d threads, libtorch %s, %s params, precision %s\n",
		res.Preset, res.Batch, res.Device, res.Threads, res.Libtorch, humanCount(res.Params), res.Precision)
	fmt.Fprintf(w, "%-26s %12s %12s %12s\n", "", "s/step", "images/s", "GFLOP/s")
	fmt.Fprintf(w, "%-26s %12.4f %12.1f %12.1f\n", "train (fwd+bwd+AdamW+EMA)", res.TrainStepS, res.TrainImagesPerS, res.TrainGFLOPS)
	denoise := "denoise (one forward)"
	if res.Workers > 1 {
		denoise = fmt.Sprintf("denoise (%d workers)", res.Workers)
	}
	fmt.Fprintf(w, "%-26s %12.4f %12.1f %12.1f\n", denoise, res.SampleStepS, res.SampleImagesPerS, res.SampleGFLOPS)
	gemm := func(dt string) string {
		if res.Workers > 1 {
			return fmt.Sprintf("GEMM %s %d x%d", dt, gemmSize, res.Workers)
		}
		return fmt.Sprintf("GEMM %s %d", dt, gemmSize)
	}
	fmt.Fprintf(w, "%-26s %12s %12s %12.1f\n", gemm("float32"), "", "", res.GEMMGFLOPS)
	if res.LowGEMMGFLOPS > 0 {
		fmt.Fprintf(w, "%-26s %12s %12s %12.1f\n", gemm(res.Precision), "", "", res.LowGEMMGFLOPS)
	}
	fmt.Fprintf(w, "peak RSS %.1f MiB\n", float64(res.PeakRSSBytes)/(1<<20))
	if profile {
		printProfile(w, "training step", res.TrainProfile)
		printProfile(w, "denoising step", res.SampleProfile)
	}
	return nil
}

// benchTrainStep is the seconds of one training step of the trainer's own
// (forward, backward, AdamW, EMA), fed random images, after warm untimed
// steps, averaged over iters; its model is built as ddpm train builds it.
// With profile, iters more steps run under the operator profiler, whose
// stats it returns too.
func benchTrainStep(ctx context.Context, cfg unet.Config, dev torch.Device, precision diffusion.Precision, batch int, shape []int64, warm, iters int, profile bool) (float64, []torch.OpStat, error) {
	model, err := unet.NewForTraining(cfg, dev, torch.Float32, nil)
	if err != nil {
		return 0, nil, err
	}
	defer model.Close()
	sched, err := diffusion.NewSchedule(diffusion.DefaultScheduleConfig())
	if err != nil {
		return 0, nil, err
	}
	steps := warm + iters
	if profile {
		steps += iters
	}
	tr, err := train.New(model, sched, train.Config{Steps: int64(steps), BatchSize: batch,
		LogEvery: 1 << 30, CheckpointEvery: 1 << 30, Precision: precision}, dev, shape)
	if err != nil {
		return 0, nil, err
	}
	defer tr.Close()
	src := &randomBatches{n: batch, per: int(shape[0] * shape[1] * shape[2])}
	var start time.Time
	var elapsed time.Duration
	profiling := false
	tr.AfterStep = func(step int64, _ string) (map[string]float64, error) {
		switch step {
		case int64(warm):
			start = time.Now()
		case int64(warm + iters):
			elapsed = time.Since(start)
			if profile {
				if err := torch.StartProfiler(); err != nil {
					return nil, err
				}
				profiling = true
			}
		}
		return nil, nil
	}
	if warm == 0 {
		start = time.Now()
	}
	err = tr.Run(ctx, src)
	var stats []torch.OpStat
	if profiling {
		var perr error
		stats, perr = torch.StopProfiler()
		err = cmp.Or(err, perr)
	}
	if err != nil {
		return 0, nil, err
	}
	return elapsed.Seconds() / float64(iters), stats, nil
}

// gemmGFLOPS is the rate of gemmSize x gemmSize matmuls in dt on dev
// (2n^3 operations each), parallel of them at once from as many goroutines
// (as a server's workers run their forwards), all of them together: the
// best of two rounds after a warm-up.
func gemmGFLOPS(dev torch.Device, dt torch.DType, parallel int) (float64, error) {
	n := int64(gemmSize)
	scopes := make([]*torch.Scope, parallel)
	operands := make([][2]*torch.Tensor, parallel)
	for i := range scopes {
		s := torch.NewScope(torch.Inference)
		defer s.Close()
		scopes[i] = s
		for j := range operands[i] {
			operands[i][j] = s.ToDType(s.Randn([]int64{n, n}, torch.Float32, dev, nil), dt)
		}
		if err := s.Err(); err != nil {
			return 0, fmt.Errorf("gemm %s: %w", dt, err)
		}
	}
	matmul := func(i int) error {
		s := scopes[i].Child()
		defer s.Close()
		p := s.Matmul(operands[i][0], operands[i][1])
		_, err := s.Sum(s.Narrow(s.Narrow(p, 0, 0, 1), 1, 0, 1), nil, false).Item() // waits for the device
		return err
	}
	best := 0.0
	for round := range 3 {
		start := time.Now()
		if err := atOnce(parallel, matmul); err != nil {
			return 0, fmt.Errorf("gemm %s: %w", dt, err)
		}
		if round > 0 {
			best = max(best, float64(parallel)*2*float64(n*n*n)/time.Since(start).Seconds()/1e9)
		}
	}
	return best, nil
}

// atOnce runs f(0) .. f(n-1) in n goroutines at once and returns their
// errors joined.
func atOnce(n int, f func(i int) error) error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f(i)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// randomBatches feeds the benchmark's trainer with uniform noise images.
type randomBatches struct{ n, per int }

func (r *randomBatches) Next(context.Context) (data.Batch, error) {
	img := make([]float32, r.n*r.per)
	for i := range img {
		img[i] = rand.Float32()*2 - 1
	}
	return data.Batch{Images: img, N: r.n}, nil
}

func (r *randomBatches) Skip(int) {}

// peakRSS is the process's peak resident set size (VmHWM), 0 if unknown.
func peakRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return kb * 1024
			}
		}
	}
	return 0
}
