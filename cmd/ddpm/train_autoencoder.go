package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/ddpm-go/ddpm/diffusion/autoencoder"
	"github.com/ddpm-go/ddpm/diffusion/checkpoint"
	"github.com/ddpm-go/ddpm/diffusion/nn"
	"github.com/ddpm-go/ddpm/diffusion/optim"
	"github.com/ddpm-go/ddpm/torch"
	"github.com/urfave/cli/v2"
)

var trainAutoencoderFlags = []cli.Flag{
	&cli.StringFlag{Name: "data", Usage: "training images: an IDX or CIFAR-10 file or folder, or a folder of PNG/JPEG images (default: Debian's Fashion-MNIST)", EnvVars: []string{"DDPM_DATA"}},
	&cli.IntFlag{Name: "image-size", Value: 32, Usage: "image size the data is brought to (sample_size)", EnvVars: []string{"DDPM_IMAGE_SIZE"}},
	&cli.IntFlag{Name: "channels", Value: 1, Usage: "image channels, 1 or 3", EnvVars: []string{"DDPM_CHANNELS"}},
	&cli.IntSliceFlag{Name: "block-channels", Value: cli.NewIntSlice(32, 64, 64), Usage: "width per level (block_out_channels); each level but the last halves the resolution (default: 32x32 images to 8x8 latents)", EnvVars: []string{"DDPM_BLOCK_CHANNELS"}},
	&cli.IntFlag{Name: "latent-channels", Value: 4, Usage: "channels of a latent", EnvVars: []string{"DDPM_LATENT_CHANNELS"}},
	&cli.IntFlag{Name: "layers-per-block", Value: 1, Usage: "residual blocks per encoder level (the decoder has one more)", EnvVars: []string{"DDPM_LAYERS_PER_BLOCK"}},
	&cli.IntFlag{Name: "norm-groups", Value: 8, Usage: "GroupNorm groups (must divide every width)", EnvVars: []string{"DDPM_NORM_GROUPS"}},
	&cli.StringFlag{Name: "loss", Value: string(autoencoder.L1), Usage: "reconstruction loss: l1 or l2", EnvVars: []string{"DDPM_LOSS"}},
	&cli.Float64Flag{Name: "kl-weight", Value: autoencoder.DefaultKLWeight, Usage: "weight of the KL term (both terms are means over elements)", EnvVars: []string{"DDPM_KL_WEIGHT"}},
	&cli.IntFlag{Name: "batch", Value: 32, Usage: "images per step", EnvVars: []string{"DDPM_BATCH"}},
	&cli.Int64Flag{Name: "steps", Value: 2000, Usage: "optimizer steps", EnvVars: []string{"DDPM_STEPS"}},
	&cli.Float64Flag{Name: "lr", Value: 1e-3, Usage: "peak learning rate", EnvVars: []string{"DDPM_LR"}},
	&cli.Int64Flag{Name: "warmup", Value: 100, Usage: "learning-rate warm-up steps (0: none)", EnvVars: []string{"DDPM_WARMUP"}},
	&cli.Float64Flag{Name: "weight-decay", Usage: "AdamW decoupled weight decay", EnvVars: []string{"DDPM_WEIGHT_DECAY"}},
	&cli.Float64Flag{Name: "ema-decay", Value: 0.999, Usage: "EMA decay of the weights (with warm-up; 0: no EMA)", EnvVars: []string{"DDPM_EMA_DECAY"}},
	&cli.Float64Flag{Name: "grad-clip", Value: 1, Usage: "gradient norm limit (0 or negative: off)", EnvVars: []string{"DDPM_GRAD_CLIP"}},
	&cli.BoolFlag{Name: "flip", Usage: "random horizontal flips", EnvVars: []string{"DDPM_FLIP"}},
	&cli.Uint64Flag{Name: "seed", Usage: "random seed", EnvVars: []string{"DDPM_SEED"}},
	&cli.Int64Flag{Name: "checkpoint-every", Value: 500, Usage: "steps between checkpoints", EnvVars: []string{"DDPM_CHECKPOINT_EVERY"}},
	&cli.IntFlag{Name: "keep", Value: 3, Usage: "checkpoints kept", EnvVars: []string{"DDPM_KEEP"}},
	&cli.Int64Flag{Name: "log-every", Value: 50, Usage: "steps between metrics.jsonl records", EnvVars: []string{"DDPM_LOG_EVERY"}},
	&cli.Int64Flag{Name: "eval-every", Value: 500, Usage: "steps between held-out PSNR measurements and reconstruction grids (0: only at the end)", EnvVars: []string{"DDPM_EVAL_EVERY"}},
	&cli.IntFlag{Name: "eval-n", Value: 1000, Usage: "held-out images for the reconstruction PSNR: the test split beside --data when there is one, else images held out of it (0: none)", EnvVars: []string{"DDPM_EVAL_N"}},
	&cli.StringFlag{Name: "resume", Usage: "continue the run in `RUN_DIR` from its last checkpoint", EnvVars: []string{"DDPM_RESUME"}},
	&cli.StringFlag{Name: "out", Usage: "run directory (default: runs/vae-<date-time>)", EnvVars: []string{"DDPM_OUT"}},
	&cli.StringFlag{Name: "device", Value: "auto", Usage: "cpu, cuda, cuda:N or auto", EnvVars: []string{"DDPM_DEVICE"}},
	&cli.IntFlag{Name: "threads", Usage: "intra-op CPU threads (default: every CPU, or OMP_NUM_THREADS)", EnvVars: []string{"DDPM_THREADS"}},
	&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "no progress output", EnvVars: []string{"DDPM_QUIET"}},
}

var trainAutoencoderCommand = &cli.Command{
	Name:  "train-autoencoder",
	Usage: "train a KL autoencoder (diffusers' AutoencoderKL) for latent diffusion",
	Description: "Writes checkpoints (safetensors), metrics.jsonl, loss.png and reconstruction grids\n" +
		"(samples/step-N.png: held-out images over their reconstructions) to a run directory, and\n" +
		"reports the held-out reconstruction PSNR at the end. Ctrl-C saves a checkpoint;\n" +
		"--resume RUN_DIR continues.",
	Flags:  trainAutoencoderFlags,
	Action: runTrainAutoencoder,
}

// autoencoderResumeFlags may be given with --resume: how far to train and
// how to run, not what the run is.
var autoencoderResumeFlags = map[string]bool{"resume": true, "steps": true, "device": true, "threads": true,
	"quiet": true, "eval-n": true, "eval-every": true, "log-every": true, "data": true}

// autoencoderRun is what a run trains: the model and its training
// configuration, new or read from the run's last checkpoint.
type autoencoderRun struct {
	model   autoencoder.Config
	train   autoencoder.TrainConfig
	data    string
	resume  string // the checkpoint to resume, "" for a new run
	every   int64
	keep    int
	evalN   int   // held-out images (--eval-n)
	restart int64 // the step resumed at
}

func resolveAutoencoderRun(c *cli.Context) (autoencoderRun, string, error) {
	r := autoencoderRun{data: c.String("data"), every: c.Int64("checkpoint-every"), keep: c.Int("keep"), evalN: c.Int("eval-n")}
	if r.every <= 0 || r.keep <= 0 || c.Int64("log-every") <= 0 {
		return r, "", fmt.Errorf("--checkpoint-every (%d), --keep (%d) and --log-every (%d) must be positive", r.every, r.keep, c.Int64("log-every"))
	}
	if c.Int64("eval-every") < 0 {
		return r, "", fmt.Errorf("--eval-every %d must not be negative", c.Int64("eval-every"))
	}
	if err := checkRange("eval-n", c.Int("eval-n"), 0, maxImages); err != nil {
		return r, "", err
	}
	if dir := c.String("resume"); dir != "" {
		for _, f := range trainAutoencoderFlags {
			if name := f.Names()[0]; !autoencoderResumeFlags[name] && c.IsSet(name) {
				return r, "", fmt.Errorf("--%s cannot change a run on --resume (its configuration is in its checkpoints); with --resume give only --steps, --data, --device, --threads, --log-every, --eval-every, --eval-n or --quiet", name)
			}
		}
		path, err := checkpoint.Latest(dir)
		if err != nil {
			return r, "", err
		}
		meta, err := autoencoder.ReadCheckpointMeta(path)
		if err != nil {
			return r, "", err
		}
		r.model, r.train, r.resume, r.restart = meta.Model, meta.Train, path, meta.Step
		// The run's own checkpoint interval, kept count and held-out count,
		// as ddpm train keeps its own in config.json. A run from before they
		// were recorded resumes with the defaults and --eval-n, as it did.
		if r.train.CheckpointEvery > 0 {
			r.every = r.train.CheckpointEvery
		}
		if r.train.KeepCheckpoints > 0 {
			r.keep = r.train.KeepCheckpoints
		}
		if n := r.train.HeldOut; n != nil {
			if givenHere(c, "eval-n") && r.evalN != *n {
				return r, "", fmt.Errorf("--eval-n %d cannot change a run on --resume: the run's is %d, and without a test split it decides which images train; leave --eval-n out", r.evalN, *n)
			}
			r.evalN = *n
		}
		if c.IsSet("steps") {
			r.train.Steps = c.Int64("steps")
		}
		if r.data == "" {
			r.data = meta.Data
		}
		if r.restart >= r.train.Steps {
			return r, "", fmt.Errorf("the run is at step %d of %d; give --steps above %d to train further", r.restart, r.train.Steps, r.restart)
		}
		return r, dir, nil
	}
	rec, err := autoencoder.ParseReconstruction(c.String("loss"))
	if err != nil {
		return r, "", err
	}
	if err := checkRange("image-size", c.Int("image-size"), 4, 1024); err != nil {
		return r, "", err
	}
	m := autoencoder.DefaultConfig()
	m.InChannels, m.OutChannels, m.LatentChannels = c.Int("channels"), c.Int("channels"), c.Int("latent-channels")
	m.BlockOutChannels = c.IntSlice("block-channels")
	m.DownBlockTypes, m.UpBlockTypes = nil, nil
	for range m.BlockOutChannels {
		m.DownBlockTypes = append(m.DownBlockTypes, autoencoder.DownEncoderBlock2D)
		m.UpBlockTypes = append(m.UpBlockTypes, autoencoder.UpDecoderBlock2D)
	}
	m.LayersPerBlock, m.NormNumGroups, m.SampleSize = c.Int("layers-per-block"), c.Int("norm-groups"), c.Int("image-size")
	if err := m.Validate(); err != nil {
		return r, "", err
	}
	// As ddpm train checks them: AdamWConfig would take a zero rate for
	// its default and a negative warm-up for none.
	for _, name := range []string{"lr", "weight-decay"} {
		if err := finiteFlag(name, c.Float64(name)); err != nil {
			return r, "", err
		}
	}
	if lr := c.Float64("lr"); !(lr > 0) {
		return r, "", fmt.Errorf("--lr %g must be positive", lr)
	}
	warmup := c.Int64("warmup")
	if warmup < 0 {
		return r, "", fmt.Errorf("--warmup %d must be non-negative", warmup)
	}
	if warmup == 0 {
		warmup = -1 // AdamWConfig: < 0 is none, 0 the default
	}
	r.model = m
	heldOut := r.evalN
	r.train = autoencoder.TrainConfig{
		Steps: c.Int64("steps"), BatchSize: c.Int("batch"),
		Optimizer: optim.AdamWConfig{LR: c.Float64("lr"), WarmupSteps: warmup, WeightDecay: c.Float64("weight-decay")},
		Loss:      autoencoder.Loss{Reconstruction: rec, KLWeight: c.Float64("kl-weight")},
		EMADecay:  c.Float64("ema-decay"), GradClip: c.Float64("grad-clip"), Flip: c.Bool("flip"), Seed: c.Uint64("seed"),
		CheckpointEvery: r.every, KeepCheckpoints: r.keep, HeldOut: &heldOut,
	}
	if err := r.train.Validate(); err != nil {
		return r, "", err
	}
	dir := c.String("out")
	if dir == "" {
		dir = filepath.Join("runs", "vae-"+time.Now().Format("20060102-150405"))
	}
	if err := checkNewRunDir(dir); err != nil {
		return r, "", err
	}
	return r, dir, nil
}

func runTrainAutoencoder(c *cli.Context) error {
	r, dir, err := resolveAutoencoderRun(c)
	if err != nil {
		return err
	}
	dev, err := setupDevice(c.String("device"), c.Int("threads"))
	if err != nil {
		return err
	}
	ds, err := openDataset(r.data, r.model.SampleSize, r.model.InChannels)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("cannot create the run directory: %w", err)
	}
	unlock, err := lockRunDir(dir)
	if err != nil {
		return err
	}
	defer unlock()

	// The initial weights draw from their own stream (the trainer's
	// generator, for the posterior samples, starts from Seed).
	gen, err := torch.NewGenerator(r.train.Seed^0x5eed_ae, dev)
	if err != nil {
		return err
	}
	defer gen.Close()
	m, err := autoencoder.NewForTraining(r.model, dev, torch.Float32, gen)
	if err != nil {
		return err
	}
	defer m.Close()
	trainSet, eval, err := newAutoencoderEval(ds, r.evalN, r.train.Seed, m, r.train.EMADecay > 0)
	if err != nil {
		return err
	}
	defer eval.close()
	tr, err := autoencoder.NewTrainer(m, trainSet, r.train)
	if err != nil {
		return err
	}
	defer tr.Close()
	out := c.App.Writer
	fmt.Fprintf(out, "ddpm: training an autoencoder (%s params, latents %dx%dx%d) on %s (%d images), device %s\n",
		humanCount(nn.NumParams(m.Params())), r.model.LatentChannels, int64(r.model.SampleSize)/r.model.Downscale(),
		int64(r.model.SampleSize)/r.model.Downscale(), ds.Source, trainSet.N, dev)
	fmt.Fprintf(out, "ddpm: writing to %s\n", dir)
	if r.resume != "" {
		if err := tr.Resume(r.resume); err != nil {
			return err
		}
		fmt.Fprintf(out, "ddpm: resumed from %s (step %d of %d)\n", r.resume, tr.Steps(), r.train.Steps)
		if tr.Reseeded {
			fmt.Fprintf(out, "ddpm: the checkpoint was written on another kind of device, whose noise generator this one cannot continue: reseeded from the run's seed and step\n")
		}
	}

	if err := removeStaleTemps(dir); err != nil {
		return err
	}
	log, err := openMetricsLog(dir, tr.Steps())
	if err != nil {
		return err
	}
	defer log.close()

	save := func() (string, error) {
		path := filepath.Join(dir, checkpoint.Name(tr.Steps()))
		if err := tr.Save(path); err != nil {
			return "", err
		}
		if err := log.plot(); err != nil {
			return "", err
		}
		return path, checkpoint.Prune(dir, r.keep, tr.Steps())
	}
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	bar := newProgress(out, c.Bool("quiet"), "train-autoencoder", r.train.Steps)
	logEvery, evalEvery := c.Int64("log-every"), c.Int64("eval-every")
	var sum autoencoderMetrics
	var summed int64
	since := time.Now()
	var last string
	var served float64 // the held-out PSNR of the last evaluation
	for tr.Steps() < r.train.Steps {
		st, err := tr.Step(ctx)
		if errors.Is(err, context.Canceled) {
			bar.finish()
			path, err := save()
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "ddpm: interrupted at step %d; checkpoint %s\n", tr.Steps(), path)
			fmt.Fprintf(out, "ddpm: resume with: ddpm train-autoencoder --resume %s\n", dir)
			return interrupted{}
		}
		if err != nil {
			return err
		}
		step := tr.Steps()
		sum.Loss, sum.Reconstruction, sum.KL, sum.LR = sum.Loss+st.Loss, sum.Reconstruction+st.Reconstruction, sum.KL+st.KL, st.LR
		summed++
		rate := float64(summed*int64(r.train.BatchSize)) / time.Since(since).Seconds()
		bar.update(step, fmt.Sprintf("loss %.4f (rec %.4f, kl %.3g)  %.1f img/s", st.Loss, st.Reconstruction, st.KL, rate))
		end := step == r.train.Steps
		evalNow := eval.held != nil && (end || (evalEvery > 0 && step%evalEvery == 0))
		if step%logEvery == 0 || end || evalNow {
			rec := autoencoderMetrics{Step: step, Loss: sum.Loss / float64(summed), Reconstruction: sum.Reconstruction / float64(summed),
				KL: sum.KL / float64(summed), LR: sum.LR, ImagesPerSec: rate}
			if evalNow {
				if served, err = eval.measure(m, tr.EMA(), dir, step); err != nil {
					return err
				}
				rec.EvalPSNR = &served
			}
			if err := log.write(rec); err != nil {
				return err
			}
			sum, summed, since = autoencoderMetrics{}, 0, time.Now()
		}
		if step%r.every == 0 || end {
			if last, err = save(); err != nil {
				return err
			}
		}
	}
	bar.finish()
	fmt.Fprintf(out, "ddpm: done: %d steps; checkpoint %s\n", tr.Steps(), last)
	if eval.held == nil {
		return nil
	}
	// The last step was evaluated: the loop ends on it.
	return eval.report(out, m, served)
}
