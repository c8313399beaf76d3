package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/diffusion/checkpoint"
	"github.com/ddpm-go/ddpm/diffusion/data"
	"github.com/ddpm-go/ddpm/diffusion/optim"
	"github.com/ddpm-go/ddpm/diffusion/train"
	"github.com/ddpm-go/ddpm/diffusion/unet"
	"github.com/ddpm-go/ddpm/internal/atomicfile"
	"github.com/ddpm-go/ddpm/torch"
	"github.com/urfave/cli/v2"
	"github.com/urfave/cli/v2/altsrc"
	"gopkg.in/yaml.v3"
)

// runConfig is everything that defines a training run; it is written to the
// run directory as config.json and read back by --resume.
type runConfig struct {
	// Format is runConfigFormat; files without it were written before zero
	// meant "the default" for the warm-up.
	Format      int                      `json:"format"`
	Data        string                   `json:"data"`
	Preset      string                   `json:"preset"`
	Model       unet.Config              `json:"model"`
	Schedule    diffusion.ScheduleConfig `json:"schedule"`
	Train       train.Config             `json:"train"`
	Flip        bool                     `json:"flip"`
	SampleEvery int64                    `json:"sample_every"`
	SampleN     int                      `json:"sample_n"`
	// Autoencoder is the autoencoder of a latent diffusion run (nil for
	// pixels); Model is then at its latent shape.
	Autoencoder *checkpoint.Autoencoder `json:"autoencoder,omitempty"`
}

// runConfigFormat is the version of config.json.
const runConfigFormat = 2

const (
	configFile  = "config.json"
	metricsFile = "metrics.jsonl"
	lossPlot    = "loss.png"
	samplesDir  = "samples"
)

var trainFlags = []cli.Flag{
	&cli.StringFlag{Name: "config", Usage: "read flag values from a YAML or JSON file (keys are flag names)", EnvVars: []string{"DDPM_CONFIG"}},
	altsrc.NewStringFlag(&cli.StringFlag{Name: "data", Usage: "training images: an IDX or CIFAR-10 file or folder, or a folder of PNG/JPEG images (default: Debian's Fashion-MNIST)", EnvVars: []string{"DDPM_DATA"}}),
	altsrc.NewStringFlag(&cli.StringFlag{Name: "autoencoder", Usage: "train on the latents of this autoencoder: a checkpoint or run directory of ddpm train-autoencoder, or a diffusers AutoencoderKL folder", EnvVars: []string{"DDPM_AUTOENCODER"}}),
	altsrc.NewStringFlag(&cli.StringFlag{Name: "preset", Value: "small", Usage: "model preset: " + joinNames(unet.PresetNames()), EnvVars: []string{"DDPM_PRESET"}}),
	altsrc.NewIntFlag(&cli.IntFlag{Name: "image-size", Usage: "model image size (default: the preset's)", EnvVars: []string{"DDPM_IMAGE_SIZE"}}),
	altsrc.NewIntFlag(&cli.IntFlag{Name: "channels", Usage: "image channels, 1 or 3 (default: the preset's)", EnvVars: []string{"DDPM_CHANNELS"}}),
	altsrc.NewIntFlag(&cli.IntFlag{Name: "base-channels", Usage: "U-Net width (default: the preset's)", EnvVars: []string{"DDPM_BASE_CHANNELS"}}),
	altsrc.NewIntSliceFlag(&cli.IntSliceFlag{Name: "channel-mult", Usage: "width multiplier per level, e.g. 1,2,2 (default: the preset's)", EnvVars: []string{"DDPM_CHANNEL_MULT"}}),
	altsrc.NewIntFlag(&cli.IntFlag{Name: "res-blocks", Usage: fmt.Sprintf("residual blocks per level, at most %d (default: the preset's)", unet.MaxResBlocks), EnvVars: []string{"DDPM_RES_BLOCKS"}}),
	altsrc.NewIntSliceFlag(&cli.IntSliceFlag{Name: "attention-res", Usage: "resolutions with self-attention, e.g. 16 (default: the preset's)", EnvVars: []string{"DDPM_ATTENTION_RES"}}),
	altsrc.NewIntFlag(&cli.IntFlag{Name: "heads", Usage: "attention heads (default: the preset's)", EnvVars: []string{"DDPM_HEADS"}}),
	altsrc.NewFloat64Flag(&cli.Float64Flag{Name: "dropout", Value: -1, Usage: "dropout rate in [0, 1)", DefaultText: "the preset's", EnvVars: []string{"DDPM_DROPOUT"}}),
	altsrc.NewStringFlag(&cli.StringFlag{Name: "schedule", Value: "linear", Usage: "noise schedule: linear, cosine, scaled-linear or sigmoid", EnvVars: []string{"DDPM_SCHEDULE"}}),
	altsrc.NewBoolFlag(&cli.BoolFlag{Name: "zero-terminal-snr", Usage: "rescale the schedule to zero terminal SNR (use with --target v)", EnvVars: []string{"DDPM_ZERO_TERMINAL_SNR"}}),
	altsrc.NewIntFlag(&cli.IntFlag{Name: "T", Value: 1000, Usage: "diffusion steps", EnvVars: []string{"DDPM_T"}}),
	altsrc.NewStringFlag(&cli.StringFlag{Name: "target", Value: "epsilon", Usage: "what the model predicts: epsilon, x0 or v", EnvVars: []string{"DDPM_TARGET"}}),
	altsrc.NewStringFlag(&cli.StringFlag{Name: "timestep-sampling", Value: "uniform", Usage: "uniform or loss-aware (importance sampling)", EnvVars: []string{"DDPM_TIMESTEP_SAMPLING"}}),
	altsrc.NewFloat64Flag(&cli.Float64Flag{Name: "min-snr", Usage: "min-SNR-γ loss weighting (e.g. 5; 0 = off)", EnvVars: []string{"DDPM_MIN_SNR"}}),
	altsrc.NewIntFlag(&cli.IntFlag{Name: "batch", Value: train.DefaultBatchSize, Usage: "images per step", EnvVars: []string{"DDPM_BATCH"}}),
	altsrc.NewInt64Flag(&cli.Int64Flag{Name: "steps", Usage: "optimizer steps", DefaultText: "4000 on a CPU, 20000 on CUDA", EnvVars: []string{"DDPM_STEPS"}}),
	altsrc.NewFloat64Flag(&cli.Float64Flag{Name: "lr", Usage: "peak learning rate", DefaultText: "4e-4 on a CPU, 2e-4 on CUDA", EnvVars: []string{"DDPM_LR"}}),
	altsrc.NewStringFlag(&cli.StringFlag{Name: "lr-decay", Usage: "learning rate after the warm-up: constant, or cosine or linear down to 0 at --steps", DefaultText: "cosine on a CPU, constant on CUDA", EnvVars: []string{"DDPM_LR_DECAY"}}),
	altsrc.NewInt64Flag(&cli.Int64Flag{Name: "warmup", Value: optim.DefaultWarmupSteps, Usage: "learning-rate warm-up steps (0: none)", EnvVars: []string{"DDPM_WARMUP"}}),
	altsrc.NewFloat64Flag(&cli.Float64Flag{Name: "weight-decay", Usage: "AdamW decoupled weight decay", EnvVars: []string{"DDPM_WEIGHT_DECAY"}}),
	altsrc.NewFloat64Flag(&cli.Float64Flag{Name: "ema-decay", Value: train.DefaultEMADecay, Usage: "EMA decay of the weights used for sampling (with warm-up)", EnvVars: []string{"DDPM_EMA_DECAY"}}),
	altsrc.NewFloat64Flag(&cli.Float64Flag{Name: "grad-clip", Value: 1, Usage: "gradient norm limit (negative: off)", EnvVars: []string{"DDPM_GRAD_CLIP"}}),
	altsrc.NewBoolFlag(&cli.BoolFlag{Name: "classes", Usage: "train class-conditional on the data's labels (for guidance)", EnvVars: []string{"DDPM_CLASSES"}}),
	altsrc.NewFloat64Flag(&cli.Float64Flag{Name: "label-dropout", Value: 0.1, Usage: "probability of the null label with --classes", EnvVars: []string{"DDPM_LABEL_DROPOUT"}}),
	altsrc.NewBoolFlag(&cli.BoolFlag{Name: "flip", Usage: "random horizontal flips", EnvVars: []string{"DDPM_FLIP"}}),
	altsrc.NewStringFlag(&cli.StringFlag{Name: "device", Value: "auto", Usage: "cpu, cuda, cuda:N or auto", EnvVars: []string{"DDPM_DEVICE"}}),
	altsrc.NewStringFlag(&cli.StringFlag{Name: "precision", Usage: "float32, bf16 (autocast, CPU or CUDA) or fp16 (autocast with loss scaling, CUDA)", DefaultText: "bf16 on a CPU with bfloat16 instructions, else float32", EnvVars: []string{"DDPM_PRECISION"}}),
	altsrc.NewIntFlag(&cli.IntFlag{Name: "threads", Usage: "intra-op CPU threads (default: every CPU, or OMP_NUM_THREADS; a CPU share per rank in distributed runs)", EnvVars: []string{"DDPM_THREADS"}}),
	altsrc.NewUint64Flag(&cli.Uint64Flag{Name: "seed", Usage: "random seed", EnvVars: []string{"DDPM_SEED"}}),
	altsrc.NewInt64Flag(&cli.Int64Flag{Name: "checkpoint-every", Value: train.DefaultCheckpointEvery, Usage: "steps between checkpoints", EnvVars: []string{"DDPM_CHECKPOINT_EVERY"}}),
	altsrc.NewIntFlag(&cli.IntFlag{Name: "keep", Value: train.DefaultKeepCheckpoints, Usage: "checkpoints kept", EnvVars: []string{"DDPM_KEEP"}}),
	altsrc.NewInt64Flag(&cli.Int64Flag{Name: "sample-every", Value: 1000, Usage: "steps between sample grids (EMA weights; 0 = only at the end)", EnvVars: []string{"DDPM_SAMPLE_EVERY"}}),
	altsrc.NewIntFlag(&cli.IntFlag{Name: "sample-n", Value: 16, Usage: "images per sample grid", EnvVars: []string{"DDPM_SAMPLE_N"}}),
	altsrc.NewInt64Flag(&cli.Int64Flag{Name: "log-every", Value: train.DefaultLogEvery, Usage: "steps between metrics records", EnvVars: []string{"DDPM_LOG_EVERY"}}),
	altsrc.NewInt64Flag(&cli.Int64Flag{Name: "eval-every", Usage: "steps between held-out evaluations (0 = off)", EnvVars: []string{"DDPM_EVAL_EVERY"}}),
	altsrc.NewIntFlag(&cli.IntFlag{Name: "eval-n", Value: 256, Usage: "samples for the offline FID (fid_classifier in the metrics log) at each evaluation, at most " + fmt.Sprint(maxImages) + " (0 = none)", EnvVars: []string{"DDPM_EVAL_N"}}),
	altsrc.NewIntFlag(&cli.IntFlag{Name: "final-eval", Value: 1000, Usage: "samples scored with the offline FID (fid-classifier) after the last step, printed and logged, at most " + fmt.Sprint(maxImages) + " (0 = none)", EnvVars: []string{"DDPM_FINAL_EVAL"}}),
	&cli.StringFlag{Name: "resume", Usage: "continue the run in `RUN_DIR` from its last checkpoint", EnvVars: []string{"DDPM_RESUME"}},
	&cli.StringFlag{Name: "out", Usage: "run directory (default: runs/<date-time>)", EnvVars: []string{"DDPM_OUT"}},
	&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "no progress output", EnvVars: []string{"DDPM_QUIET"}},
	&cli.DurationFlag{Name: "dist-timeout", Value: time.Minute, Usage: "distributed runs (torchrun environment): how long a rank waits for the others before failing; must exceed rank 0's pauses for sample grids and evaluations", EnvVars: []string{"DDPM_DIST_TIMEOUT"}},
}

var trainCommand = &cli.Command{
	Name:  "train",
	Usage: "train a diffusion model (default: the small preset on Fashion-MNIST)",
	Description: "Writes a run directory with config.json, checkpoints (safetensors), sample grids,\n" +
		"metrics.jsonl and loss.png. Ctrl-C saves a checkpoint; --resume RUN_DIR continues.",
	Flags:  trainFlags,
	Before: applyConfigFile,
	Action: runTrain,
}

// applyConfigFile gives the flags not set on the command line or in the
// environment their values from --config, when given. Its errors are
// parseTrainConfig's own lines (altsrc's wrapper would bury them in
// "Unable to create input source with context: inner error").
func applyConfigFile(c *cli.Context) error {
	path := c.String("config")
	if path == "" {
		return nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	src, err := parseTrainConfig(path, b)
	if err != nil {
		return err
	}
	return altsrc.ApplyInputSourceValues(c, src, trainFlags)
}

// parseTrainConfig reads the bytes of a --config file, YAML (which JSON also
// is) mapping flag names of ddpm train to values, into the values the flags
// take from it. An empty file, a key that is no such flag (or a flag only the
// command line gives) and a value of the wrong type are errors naming the
// file and the key.
func parseTrainConfig(path string, b []byte) (*altsrc.MapInputSource, error) {
	var keys map[string]any
	if err := yaml.Unmarshal(b, &keys); err != nil {
		return nil, fmt.Errorf("config file %s is not a YAML or JSON mapping of flag names to values: %s",
			path, strings.ReplaceAll(err.Error(), "\n", ";"))
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("config file %s sets nothing (an empty file would mean every default)", path)
	}
	flags := map[string]cli.Flag{}
	for _, f := range trainFlags {
		for _, n := range f.Names() {
			flags[n] = f
		}
	}
	values := map[any]any{}
	for k, v := range keys {
		f, ok := flags[k]
		if !ok {
			return nil, fmt.Errorf("config file %s: unknown key %q (keys are the flag names of ddpm train, e.g. steps, batch, preset)", path, k)
		}
		if _, ok := f.(altsrc.FlagInputSourceExtension); !ok {
			return nil, fmt.Errorf("config file %s: key %q can only be given on the command line (--%s)", path, k, k)
		}
		val, want := configValue(f, v)
		if want != "" {
			return nil, fmt.Errorf("config file %s: key %q wants %s, not %s", path, k, want, describeYAML(v))
		}
		values[k] = val
	}
	return altsrc.NewMapInputSource(path, values), nil
}

// configValue converts a decoded YAML value to the type the flag's input
// source expects, or says what the flag wants instead.
func configValue(f cli.Flag, v any) (any, string) {
	switch f.(type) {
	case *altsrc.StringFlag:
		if s, ok := v.(string); ok {
			return s, ""
		}
		return nil, "a string (quote it)"
	case *altsrc.BoolFlag:
		if b, ok := v.(bool); ok {
			return b, ""
		}
		return nil, "true or false"
	case *altsrc.IntFlag, *altsrc.Int64Flag:
		if i, ok := v.(int); ok {
			return i, ""
		}
		return nil, "an integer"
	case *altsrc.Uint64Flag:
		if i, ok := v.(int); ok && i >= 0 {
			return uint64(i), ""
		}
		if u, ok := v.(uint64); ok {
			return u, ""
		}
		return nil, "a non-negative integer"
	case *altsrc.Float64Flag:
		switch x := v.(type) {
		case float64:
			return x, ""
		case int:
			return float64(x), ""
		}
		return nil, "a number"
	case *altsrc.IntSliceFlag:
		list, ok := v.([]any)
		for _, e := range list {
			if _, isInt := e.(int); !isInt {
				ok = false
			}
		}
		if ok && len(list) > 0 {
			return list, ""
		}
		return nil, "a list of integers, e.g. [1, 2, 2]"
	}
	return nil, "a value this file cannot give"
}

// describeYAML names a decoded YAML value for an error message.
func describeYAML(v any) string {
	switch v.(type) {
	case nil:
		return "an empty value"
	case []any:
		return "a list"
	case map[string]any:
		return "a mapping"
	}
	s := fmt.Sprint(v)
	if len(s) > 40 {
		s = s[:40] + "..."
	}
	return fmt.Sprintf("%q", s)
}

func runTrain(c *cli.Context) error {
	// The samples scored after training, or at each evaluation: checked
	// now, not after the training they would crash.
	finalEval := c.Int("final-eval")
	for _, f := range []struct {
		name string
		v    int
	}{{"final-eval", finalEval}, {"eval-n", c.Int("eval-n")}} {
		if err := checkRange(f.name, f.v, 0, maxImages); err != nil {
			return fmt.Errorf("%w (0: none)", err)
		}
	}
	var cfg runConfig
	var dir string
	var newSteps bool // --resume with another --steps than config.json's
	resume := c.String("resume")
	if resume != "" {
		var err error
		if cfg, err = readRunConfig(resume); err != nil {
			return err
		}
		dir = resume
		if err := checkResumeFlags(c); err != nil {
			return err
		}
		if c.IsSet("steps") {
			newSteps = c.Int64("steps") != cfg.Train.Steps
			cfg.Train.Steps = c.Int64("steps")
		}
		if err := cfg.Train.Validate(); err != nil {
			return err
		}
	}
	dev, err := setupDevice(c.String("device"), c.Int("threads"))
	if err != nil {
		return err
	}
	rec := recipeFor(dev)
	var fromRecipe []string
	if resume == "" {
		if fromRecipe, err = rec.apply(c); err != nil {
			return err
		}
		if cfg, err = resolveRunConfig(c); err != nil {
			return err
		}
		if dir = c.String("out"); dir == "" {
			dir = filepath.Join("runs", time.Now().Format("20060102-150405"))
		}
		if err := checkNewRunDir(dir); err != nil {
			return err
		}
	}
	if cfg.Train.Precision == diffusion.FP16 && dev.Type != torch.DeviceCUDA {
		return fmt.Errorf("--precision fp16 needs a CUDA device (this run is on %s); on the CPU use bf16", dev)
	}
	// Checked before joining, so that no rank waits for the others to fail.
	if _, dist, _ := torch.DistEnv(); dist && (cfg.Autoencoder != nil || c.String("autoencoder") != "") {
		return errors.New("latent diffusion (--autoencoder) trains in one process; data-parallel latent runs are not supported: start it without torchrun")
	}
	pg, err := joinProcessGroup(c, &dev, c.App.Writer)
	if err != nil {
		return err
	}
	if pg != nil {
		defer pg.Close()
	}
	rank0 := pg == nil || pg.Rank() == 0 // writes the run directory
	lat, err := openLatent(c, &cfg, dir, resume != "", dev)
	if err != nil {
		return err
	}
	defer lat.close()

	size, channels := dataShape(cfg)
	ds, err := openDataset(cfg.Data, size, channels)
	if err != nil {
		return err
	}
	if resume == "" && c.Bool("classes") {
		if err := conditionOn(&cfg, ds, c.Float64("label-dropout")); err != nil {
			return err
		}
	}
	if cfg.Train.NumClasses > 0 && ds.NumClasses != cfg.Train.NumClasses {
		return fmt.Errorf("the data has %d classes, the model %d", ds.NumClasses, cfg.Train.NumClasses)
	}
	trainSet, held := ds.Split(min(1000, ds.N/10), cfg.Train.Seed)
	if cfg.Train.EvalEvery > 0 && held.N == 0 {
		return fmt.Errorf("--eval-every %d needs held-out images: a tenth of the data is held out, and %s has only %d images; give at least 10 images or --eval-every 0",
			cfg.Train.EvalEvery, ds.Source, ds.N)
	}
	if err := lat.prepare(&cfg, trainSet, c.App.Writer); err != nil {
		return err
	}

	if !rank0 {
		// Only rank 0 writes; the other ranks train quietly.
		return trainRank(c, cfg, dir, resume, dev, trainSet, pg)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("cannot create the run directory: %w", err)
	}
	unlock, err := lockRunDir(dir)
	if err != nil {
		return err
	}
	defer unlock()
	if resume == "" {
		if err := writeRunConfig(dir, cfg); err != nil {
			return err
		}
	}
	out := c.App.Writer
	fmt.Fprintf(out, "ddpm: training %s (%s params) on %s (%d images), device %s\n", cfg.Preset,
		humanCount(cfg.Model.NumParams()), ds.Source, trainSet.N, dev)
	fmt.Fprintf(out, "ddpm: writing to %s\n", dir)
	if resume == "" {
		fmt.Fprintln(out, planLine(cfg, rec, fromRecipe, finalEval))
	}

	rt, err := newRunTrainer(cfg, dir, resume != "", dev, trainSet, pg)
	if err != nil {
		return err
	}
	defer rt.close()
	tr, loader := rt.tr, rt.loader
	tr.Dir = dir
	if tr.Held, err = lat.held(held); err != nil {
		return err
	}
	tr.Data, tr.Autoencoder = ds.Path, cfg.Autoencoder
	if cfg.Train.NumClasses > 0 {
		tr.ClassNames = ds.ClassNames
	}
	for _, sk := range rt.skipped {
		fmt.Fprintf(out, "ddpm: skipped an unreadable checkpoint: %s\n", sk)
	}
	if rt.resumed != "" {
		if tr.Step() > cfg.Train.Steps {
			return fmt.Errorf("the run is at step %d, past --steps %d; give --steps above %d to train further", tr.Step(), cfg.Train.Steps, tr.Step())
		}
		fmt.Fprintf(out, "ddpm: resumed from %s (step %d of %d)\n", rt.resumed, tr.Step(), cfg.Train.Steps)
		if tr.Reseeded {
			fmt.Fprintf(out, "ddpm: the checkpoint was written on another kind of device, whose noise generator this one cannot continue: reseeded from the run's seed and step\n")
		}
		// config.json is what every --resume reads, so a new --steps goes
		// there (atomically, once the run has resumed), or the next plain
		// --resume would go back to the old end.
		if newSteps {
			if err := writeRunConfig(dir, cfg); err != nil {
				return err
			}
		}
	}
	if err := removeStaleTemps(dir); err != nil {
		return err
	}
	log, err := openMetricsLog(dir, tr.Step())
	if err != nil {
		return err
	}
	defer log.close()

	ema, err := newEMASampler(cfg, dev, rt.sched, tr.EMA(), lat.latent())
	if err != nil {
		return err
	}
	defer ema.close()
	fid := newTrainFID(cfg, c.Int("eval-n"), finalEval, ds, ema, out, c.Bool("quiet"))
	defer fid.close()
	bar := newProgress(out, c.Bool("quiet"), "train", cfg.Train.Steps)
	var end endNote
	finalFID := ""
	var logErr error
	tr.OnLog = func(m train.Metrics) {
		if err := log.write(m); err != nil && logErr == nil {
			logErr = err
		}
	}
	// Ctrl-C (or SIGTERM) stops training with a checkpoint; the sample
	// grids and evaluations run under the same context, so it stops them
	// too.
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	tr.AfterStep = func(step int64, ckpt string) (map[string]float64, error) {
		if logErr != nil {
			return nil, logErr
		}
		loss, rate := tr.Latest()
		bar.update(step, fmt.Sprintf("loss %.4f  %.1f img/s", loss, rate))
		if line := end.line(bar, step); line != "" {
			bar.println(line)
		}
		if ckpt != "" {
			if err := log.plot(); err != nil {
				return nil, err
			}
		}
		if step == cfg.Train.Steps || (cfg.SampleEvery > 0 && step%cfg.SampleEvery == 0) {
			if err := ema.writeGrid(ctx, filepath.Join(dir, samplesDir), step); err != nil {
				return nil, err
			}
		}
		if n := fid.samplesAt(step); n > 0 {
			v, err := fid.measure(ctx, step, n)
			if err != nil {
				return nil, err
			}
			if fid.finalAt(step) {
				finalFID = fmt.Sprintf("ddpm: fid-classifier %.4f (%d samples of the EMA weights with the default sampler, against the training data; ddpm eval --run %s --n %d --seed %d measures it again)", v, n, dir, n, cfg.Train.Seed)
			}
			return map[string]float64{"fid_classifier": v}, nil
		}
		return nil, nil
	}

	runStart := time.Now()
	err = tr.Run(ctx, lat.source(loader))
	bar.finish()
	reportComm(out, pg, tr, time.Since(runStart))
	if errors.Is(err, context.Canceled) {
		fmt.Fprintf(out, "ddpm: interrupted at step %d; checkpoint %s\n", tr.Step(), tr.LastCheckpoint())
		fmt.Fprintf(out, "ddpm: resume with: ddpm train --resume %s\n", dir)
		return interrupted{}
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "ddpm: done: %d steps; checkpoint %s\n", tr.Step(), tr.LastCheckpoint())
	if finalFID != "" {
		fmt.Fprintln(out, finalFID)
	}
	fmt.Fprintf(out, "ddpm: sample with: ddpm sample --run %s --n 64 --out grid.png\n", dir)
	return nil
}

// runTrainer is what every rank of a run trains with: the schedule, the
// model, its trainer (joined to the process group, resumed from the run's
// last checkpoint when asked) and the loader of the rank's shard of the data.
type runTrainer struct {
	sched   *diffusion.Schedule
	gen     *torch.Generator
	model   *unet.UNet
	tr      *train.Trainer
	loader  *data.Loader
	resumed string   // the checkpoint resumed from, "" for a new run
	skipped []string // newer checkpoints that could not be resumed
}

func newRunTrainer(cfg runConfig, dir string, resume bool, dev torch.Device, trainSet *data.Dataset, pg *torch.ProcessGroup) (rt *runTrainer, err error) {
	rt = &runTrainer{}
	defer func() {
		if err != nil {
			rt.close()
			rt = nil
		}
	}()
	if rt.sched, err = diffusion.NewSchedule(cfg.Schedule); err != nil {
		return
	}
	if rt.gen, err = torch.NewGenerator(cfg.Train.Seed, dev); err != nil {
		return
	}
	if rt.model, err = unet.NewForTraining(cfg.Model, dev, torch.Float32, rt.gen); err != nil {
		return
	}
	if rt.tr, err = train.New(rt.model, rt.sched, cfg.Train, dev,
		[]int64{int64(cfg.Model.InChannels), int64(cfg.Model.ImageSize), int64(cfg.Model.ImageSize)}); err != nil {
		return
	}
	rt.tr.Dist = pg
	if resume {
		// The newest checkpoint that loads: one cut short by a crash or a
		// full disk falls back to the one before it (Resume changes nothing
		// when it fails).
		all, err := checkpoint.List(dir)
		if err == nil && len(all) == 0 {
			err = fmt.Errorf("%w in %s", checkpoint.ErrNone, dir)
		}
		if err != nil {
			return rt, fmt.Errorf("cannot resume: %w", err)
		}
		var first error
		for i := len(all) - 1; i >= 0 && rt.resumed == ""; i-- {
			if err := rt.tr.Resume(all[i]); err != nil {
				if first == nil {
					first = fmt.Errorf("cannot resume from %s: %w", all[i], err)
				}
				rt.skipped = append(rt.skipped, fmt.Sprintf("%s (%v)", all[i], err))
				continue
			}
			rt.resumed = all[i]
		}
		if rt.resumed == "" {
			return rt, first
		}
	}
	rt.loader, err = data.NewLoader(trainSet, shardOptions(data.LoaderOptions{BatchSize: cfg.Train.BatchSize,
		Seed: cfg.Train.Seed, Shuffle: true, FlipHorizontal: cfg.Flip}, pg))
	return
}

func (rt *runTrainer) close() {
	if rt.loader != nil {
		rt.loader.Close()
	}
	if rt.tr != nil {
		rt.tr.Close()
	}
	if rt.model != nil {
		rt.model.Close()
	}
	if rt.gen != nil {
		rt.gen.Close()
	}
}

// resolveRunConfig builds a run's configuration from a preset and flags.
func resolveRunConfig(c *cli.Context) (runConfig, error) {
	cfg := runConfig{Format: runConfigFormat, Data: c.String("data"), Preset: c.String("preset"), Flip: c.Bool("flip"),
		SampleEvery: c.Int64("sample-every"), SampleN: c.Int("sample-n")}
	m, err := unet.Preset(cfg.Preset)
	if err != nil {
		return cfg, err
	}
	if c.IsSet("image-size") {
		m.ImageSize = c.Int("image-size")
		if err := checkRange("image-size", m.ImageSize, 4, 1024); err != nil {
			return cfg, err
		}
	}
	if c.IsSet("channels") {
		m.InChannels, m.OutChannels = c.Int("channels"), c.Int("channels")
	}
	if c.IsSet("base-channels") {
		m.BaseChannels = c.Int("base-channels")
		m.TimeEmbedDim = 0 // follows the width
	}
	if c.IsSet("channel-mult") {
		m.ChannelMult = c.IntSlice("channel-mult")
	}
	if c.IsSet("res-blocks") {
		m.NumResBlocks = c.Int("res-blocks")
	}
	if c.IsSet("attention-res") {
		m.AttentionResolutions = c.IntSlice("attention-res")
	}
	if c.IsSet("heads") {
		m.NumHeads = c.Int("heads")
	}
	if c.IsSet("dropout") {
		// Its default, -1, stands for the preset's; a value given is
		// checked, or NaN would fall back to the preset's without a word.
		if d := c.Float64("dropout"); !(d >= 0 && d < 1) {
			return cfg, fmt.Errorf("--dropout %g out of range [0, 1)", d)
		}
		m.Dropout = c.Float64("dropout")
	}
	// Infinities pass the libraries' sign checks and then fail as JSON
	// (config.json), after the run directory was made.
	for _, name := range []string{"lr", "weight-decay", "grad-clip", "min-snr", "label-dropout"} {
		if err := finiteFlag(name, c.Float64(name)); err != nil {
			return cfg, err
		}
	}
	// Zero means "default" in the library's configurations; on the command
	// line an explicit 0 is a mistake.
	for _, f := range []struct {
		name string
		v    float64
	}{{"batch", float64(c.Int("batch"))}, {"steps", float64(c.Int64("steps"))}, {"lr", c.Float64("lr")},
		{"checkpoint-every", float64(c.Int64("checkpoint-every"))}, {"keep", float64(c.Int("keep"))},
		{"log-every", float64(c.Int64("log-every"))}} {
		if !(f.v > 0) {
			return cfg, fmt.Errorf("--%s %g must be positive", f.name, f.v)
		}
	}
	if err := checkRange("sample-n", cfg.SampleN, 1, 1024); err != nil {
		return cfg, err
	}
	if cfg.SampleEvery < 0 {
		return cfg, fmt.Errorf("--sample-every %d must be non-negative", cfg.SampleEvery)
	}
	kind, err := diffusion.ParseScheduleKind(c.String("schedule"))
	if err != nil {
		return cfg, err
	}
	cfg.Schedule = diffusion.DefaultScheduleConfig()
	cfg.Schedule.Kind = kind
	cfg.Schedule.T = c.Int("T")
	cfg.Schedule.ZeroTerminalSNR = c.Bool("zero-terminal-snr")
	if cfg.Schedule.T < 1 {
		return cfg, fmt.Errorf("--T %d must be at least 1", cfg.Schedule.T)
	}
	if _, err := diffusion.NewSchedule(cfg.Schedule); err != nil {
		return cfg, err
	}
	target, err := diffusion.ParseTarget(c.String("target"))
	if err != nil {
		return cfg, err
	}
	if cfg.Schedule.ZeroTerminalSNR && target == diffusion.Epsilon {
		// Refused now rather than at the first sample grid: the samplers
		// start where ᾱ = 0, and x_0 = (x - sqrt(1-ᾱ) ε)/sqrt(ᾱ).
		return cfg, errors.New("--zero-terminal-snr needs --target v or x0: at the last timestep ᾱ = 0, where a noise prediction gives no x_0 to sample with")
	}
	sampling, err := train.ParseSampling(c.String("timestep-sampling"))
	if err != nil {
		return cfg, err
	}
	precision, err := diffusion.ParsePrecision(c.String("precision"))
	if err != nil {
		return cfg, err
	}
	warmup := c.Int64("warmup")
	if warmup < 0 {
		return cfg, fmt.Errorf("--warmup %d must be non-negative", warmup)
	}
	if warmup == 0 {
		warmup = -1 // the library's "none" (0 selects its default)
	}
	decay, err := optim.ParseLRDecay(c.String("lr-decay"))
	if err != nil {
		return cfg, err
	}
	if d := c.Float64("ema-decay"); !(d > 0 && d <= 1) {
		return cfg, fmt.Errorf("--ema-decay %g out of range (0, 1]", d)
	}
	cfg.Train = train.Config{
		Steps: c.Int64("steps"), BatchSize: c.Int("batch"), Seed: c.Uint64("seed"),
		Target: target, Sampling: sampling, MinSNRGamma: c.Float64("min-snr"), Precision: precision,
		Optimizer: optim.AdamWConfig{LR: c.Float64("lr"), WeightDecay: c.Float64("weight-decay"),
			WarmupSteps: warmup, Decay: decay},
		GradClip: c.Float64("grad-clip"), EMADecay: c.Float64("ema-decay"),
		CheckpointEvery: c.Int64("checkpoint-every"), KeepCheckpoints: c.Int("keep"),
		LogEvery: c.Int64("log-every"), EvalEvery: c.Int64("eval-every"),
	}
	if err := m.Validate(); err != nil && c.String("autoencoder") == "" { // a latent U-Net is checked at its latent shape
		return cfg, err
	}
	cfg.Model = m.WithDefaults()
	if err := cfg.Train.Validate(); err != nil {
		return cfg, err
	}
	cfg.Train = cfg.Train.WithDefaults()
	return cfg, nil
}

// conditionOn makes a new run class-conditional on the data's labels.
func conditionOn(cfg *runConfig, ds *data.Dataset, labelDropout float64) error {
	if ds.Labels == nil || ds.NumClasses < 1 {
		return fmt.Errorf("--classes needs labelled data, and %s has no labels", ds.Source)
	}
	cfg.Train.NumClasses, cfg.Model.NumClasses = ds.NumClasses, ds.NumClasses
	cfg.Train.LabelDropout = labelDropout
	return cfg.Train.Validate()
}

// openDataset opens --data, or Debian's Fashion-MNIST when it is empty.
func openDataset(path string, size, channels int) (*data.Dataset, error) {
	if path == "" {
		path = data.FashionMNISTDir
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("no --data given and the default Fashion-MNIST is missing (%s): install dataset-fashion-mnist (apt-get install dataset-fashion-mnist) or pass --data", path)
		}
	}
	return data.Open(path, size, channels)
}

func writeRunConfig(dir string, cfg runConfig) error {
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(dir, configFile), append(b, '\n')); err != nil {
		return fmt.Errorf("cannot write the run configuration: %w", err)
	}
	return nil
}

func readRunConfig(dir string) (runConfig, error) {
	var cfg runConfig
	b, err := os.ReadFile(filepath.Join(dir, configFile))
	if err != nil {
		return cfg, fmt.Errorf("cannot resume %s: %w (is it a run directory?)", dir, err)
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		return cfg, fmt.Errorf("cannot resume %s: %s is corrupt: %w", dir, configFile, err)
	}
	if cfg.Format == 0 && cfg.Train.Optimizer.WarmupSteps == 0 {
		cfg.Train.Optimizer.WarmupSteps = -1 // then 0 meant no warm-up
	}
	cfg.Format = runConfigFormat
	return cfg, nil
}

// checkNewRunDir refuses to start a new run in a directory that already
// holds one: its checkpoints, configuration and metrics would be mixed with
// the new run's (and pruned by it).
func checkNewRunDir(dir string) error {
	if _, err := os.Stat(filepath.Join(dir, configFile)); err == nil {
		return fmt.Errorf("--out %s already holds a run; continue it with --resume %s, or choose another --out", dir, dir)
	}
	if ckpts, err := checkpoint.List(dir); err == nil && len(ckpts) > 0 {
		return fmt.Errorf("--out %s already holds checkpoints; continue with --resume %s, or choose another --out", dir, dir)
	}
	return nil
}

// lockRunDir takes an exclusive lock on the run directory (a lock file held
// with flock), so that two trainings cannot write into one run: the second
// fails at once. The lock goes with the process, however it ends.
func lockRunDir(dir string) (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("cannot lock the run directory: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("another ddpm train is writing to %s (%v)", dir, err)
	}
	return func() { f.Close() }, nil
}

// resumeFlags are the train flags that may be given with --resume: how far
// to train and how to run, not what the run is.
var resumeFlags = map[string]bool{"resume": true, "steps": true, "device": true, "threads": true,
	"quiet": true, "dist-timeout": true, "eval-n": true, "final-eval": true, "config": true}

// checkResumeFlags refuses flags that would change a resumed run's stored
// configuration: they used to be ignored without a word.
func checkResumeFlags(c *cli.Context) error {
	for _, f := range trainFlags {
		name := f.Names()[0]
		if !resumeFlags[name] && c.IsSet(name) {
			return fmt.Errorf("--%s cannot change a run on --resume (its configuration is in %s); with --resume give only --steps, --device, --threads or --quiet",
				name, configFile)
		}
	}
	return nil
}
