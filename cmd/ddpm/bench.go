package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
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
	Usage: "time a training step and a denoising step of a preset",
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "preset", Value: "small", Usage: "model preset: " + joinNames(unet.PresetNames())},
		&cli.IntFlag{Name: "batch", Value: 64, Usage: "images per step"},
		&cli.StringFlag{Name: "device", Value: "auto", Usage: "cpu, cuda, cuda:N or auto"},
		&cli.IntFlag{Name: "threads", Usage: "intra-op CPU threads (default: every CPU, or OMP_NUM_THREADS; a CPU share per rank in distributed runs)"},
		&cli.IntFlag{Name: "iters", Value: 5, Usage: "timed iterations of each step"},
		&cli.IntFlag{Name: "warmup", Value: 2, Usage: "untimed iterations first"},
		&cli.BoolFlag{Name: "json", Usage: "print one JSON object"},
	},
	Action: runBench,
}

// benchResult is what bench prints; --json is read by scripts.
type benchResult struct {
	Preset           string  `json:"preset"`
	Batch            int     `json:"batch"`
	Device           string  `json:"device"`
	Threads          int     `json:"threads"`
	Libtorch         string  `json:"libtorch"`
	Params           int64   `json:"params"`
	TrainStepS       float64 `json:"train_step_s"`
	SampleStepS      float64 `json:"sample_step_s"`
	TrainImagesPerS  float64 `json:"train_images_per_s"`
	SampleImagesPerS float64 `json:"sample_images_per_s"`
	PeakRSSBytes     int64   `json:"peak_rss_bytes"`
}

func runBench(c *cli.Context) error {
	batch, iters, warm := c.Int("batch"), c.Int("iters"), c.Int("warmup")
	if batch < 1 || iters < 1 || warm < 0 {
		return fmt.Errorf("--batch and --iters must be at least 1 and --warmup non-negative")
	}
	cfg, err := unet.Preset(c.String("preset"))
	if err != nil {
		return err
	}
	dev, err := setupDevice(c.String("device"), c.Int("threads"))
	if err != nil {
		return err
	}
	model, err := unet.New(cfg, dev, torch.Float32, nil)
	if err != nil {
		return err
	}
	defer model.Close()
	res := benchResult{Preset: c.String("preset"), Batch: batch, Device: dev.String(), Threads: torch.NumThreads(),
		Libtorch: torch.Version(), Params: cfg.NumParams()}

	sched, err := diffusion.NewSchedule(diffusion.DefaultScheduleConfig())
	if err != nil {
		return err
	}
	shape := []int64{int64(cfg.InChannels), int64(cfg.ImageSize), int64(cfg.ImageSize)}
	// The training step is the trainer's own, fed random images.
	tr, err := train.New(model, sched, train.Config{Steps: int64(warm + iters), BatchSize: batch,
		LogEvery: 1 << 30, CheckpointEvery: 1 << 30}, dev, shape)
	if err != nil {
		return err
	}
	defer tr.Close()
	src := &randomBatches{n: batch, per: int(shape[0] * shape[1] * shape[2])}
	var start time.Time
	tr.AfterStep = func(step int64, _ string) (map[string]float64, error) {
		if step == int64(warm) {
			start = time.Now()
		}
		return nil, nil
	}
	if warm == 0 {
		start = time.Now()
	}
	if err := tr.Run(c.Context, src); err != nil {
		return err
	}
	res.TrainStepS = time.Since(start).Seconds() / float64(iters)

	// The sampling step is one denoising forward in inference mode.
	step := func() error {
		s := torch.NewScope(torch.Inference)
		defer s.Close()
		x := s.Randn(append([]int64{int64(batch)}, shape...), torch.Float32, dev, nil)
		t := s.Full([]int64{int64(batch)}, 500, torch.Int64, dev)
		out := model.Forward(s, x, t, nil)
		if err := s.Err(); err != nil {
			return err
		}
		_, err := s.Sum(out, nil, false).Item() // waits for the device
		return err
	}
	for range warm {
		if err := step(); err != nil {
			return err
		}
	}
	start = time.Now()
	for range iters {
		if err := step(); err != nil {
			return err
		}
	}
	res.SampleStepS = time.Since(start).Seconds() / float64(iters)
	res.TrainImagesPerS = float64(batch) / res.TrainStepS
	res.SampleImagesPerS = float64(batch) / res.SampleStepS
	res.PeakRSSBytes = peakRSS()

	w := c.App.Writer
	if c.Bool("json") {
		b, _ := json.Marshal(res)
		fmt.Fprintln(w, string(b))
		return nil
	}
	fmt.Fprintf(w, "preset %s, batch %d, device %s, %d threads, libtorch %s, %s params\n",
		res.Preset, res.Batch, res.Device, res.Threads, res.Libtorch, humanCount(res.Params))
	fmt.Fprintf(w, "%-26s %12s %12s\n", "", "s/step", "images/s")
	fmt.Fprintf(w, "%-26s %12.4f %12.1f\n", "train (fwd+bwd+AdamW+EMA)", res.TrainStepS, res.TrainImagesPerS)
	fmt.Fprintf(w, "%-26s %12.4f %12.1f\n", "denoise (one forward)", res.SampleStepS, res.SampleImagesPerS)
	fmt.Fprintf(w, "peak RSS %.1f MiB\n", float64(res.PeakRSSBytes)/(1<<20))
	return nil
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
