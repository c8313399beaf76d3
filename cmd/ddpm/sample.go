package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"strings"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/diffusion/checkpoint"
	"github.com/ddpm-go/ddpm/diffusion/images"
	"github.com/ddpm-go/ddpm/diffusion/pipeline"
	"github.com/ddpm-go/ddpm/diffusion/sampler"
	"github.com/ddpm-go/ddpm/diffusion/serve"
	"github.com/ddpm-go/ddpm/torch"
	"github.com/urfave/cli/v2"
)

// modelFlags pick a trained model: a run directory, a checkpoint file or a
// diffusers folder.
var modelFlags = []cli.Flag{
	&cli.StringFlag{Name: "run", Usage: "run directory (its newest checkpoint)", EnvVars: []string{"DDPM_RUN"}},
	&cli.StringFlag{Name: "model", Usage: "diffusers DDPMPipeline folder (UNet2DModel and scheduler, e.g. google/ddpm-cifar10-32 downloaded beforehand)", EnvVars: []string{"DDPM_MODEL"}},
	&cli.StringFlag{Name: "checkpoint", Usage: "checkpoint file (.safetensors)", EnvVars: []string{"DDPM_CHECKPOINT"}},
	&cli.StringFlag{Name: "weights", Value: "ema", Usage: "ema or model", EnvVars: []string{"DDPM_WEIGHTS"}},
	&cli.StringFlag{Name: "device", Value: "auto", Usage: "cpu, cuda, cuda:N or auto", EnvVars: []string{"DDPM_DEVICE"}},
	&cli.IntFlag{Name: "threads", Usage: "intra-op CPU threads (default: every CPU, or OMP_NUM_THREADS; a CPU share per rank in distributed runs)", EnvVars: []string{"DDPM_THREADS"}},
	precisionFlag,
}

// samplerFlags are the sampler settings shared by sample and eval.
var samplerFlags = []cli.Flag{
	&cli.StringFlag{Name: "sampler", Value: string(pipeline.DefaultSampling().Sampler), Usage: "ddpm, ddim or dpmpp-2m (a diffusers folder: its scheduler's)", EnvVars: []string{"DDPM_SAMPLER"}},
	&cli.IntFlag{Name: "steps", Usage: "sampler steps (default: T for ddpm, 50 for ddim, 20 for dpmpp-2m)", EnvVars: []string{"DDPM_SAMPLE_STEPS"}},
	&cli.StringFlag{Name: "spacing", Usage: "timestep spacing: linspace, leading, trailing, logsnr or karras", EnvVars: []string{"DDPM_SPACING"}},
	&cli.Float64Flag{Name: "eta", Usage: "DDIM eta in [0, 1]", EnvVars: []string{"DDPM_ETA"}},
	&cli.StringFlag{Name: "variance", Value: "fixed-small", Usage: "DDPM variance: fixed-small or fixed-large (a diffusers folder: its scheduler's)", EnvVars: []string{"DDPM_VARIANCE"}},
	&cli.StringFlag{Name: "clip", Value: "clip", Usage: "x0 clipping: none, clip or dynamic (a diffusers folder: its scheduler's)", EnvVars: []string{"DDPM_CLIP"}},
	&cli.Float64Flag{Name: "guidance", Usage: "classifier-free guidance weight w (needs --class)", EnvVars: []string{"DDPM_GUIDANCE"}},
	&cli.Int64Flag{Name: "class", Value: -1, Usage: "class label of every image (class-conditional models)", EnvVars: []string{"DDPM_CLASS"}},
	&cli.IntFlag{Name: "batch", Value: 64, Usage: "images per sampler run", EnvVars: []string{"DDPM_SAMPLE_BATCH"}},
	&cli.Uint64Flag{Name: "seed", Usage: "random seed", EnvVars: []string{"DDPM_SEED"}},
}

var sampleCommand = &cli.Command{
	Name:  "sample",
	Usage: "generate images from a trained model",
	Flags: append(append(append([]cli.Flag{}, modelFlags...), samplerFlags...),
		&cli.IntFlag{Name: "n", Value: 64, Usage: "number of images", EnvVars: []string{"DDPM_N"}},
		&cli.StringFlag{Name: "out", Value: "samples.png", Usage: "PNG grid to write (empty: none)", EnvVars: []string{"DDPM_SAMPLE_OUT"}},
		&cli.StringFlag{Name: "out-dir", Usage: "also write one PNG per image into this folder", EnvVars: []string{"DDPM_SAMPLE_DIR"}},
		&cli.StringFlag{Name: "trajectory", Usage: "write a strip of x_t (top) and predicted x_0 (bottom) of the first image across the steps to this PNG", EnvVars: []string{"DDPM_TRAJECTORY"}},
		&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "no progress output", EnvVars: []string{"DDPM_QUIET"}},
	),
	Action: runSample,
}

// checkpointPath resolves --run / --checkpoint.
func checkpointPath(c *cli.Context) (string, error) {
	if err := onlyOne(c, "run", "checkpoint"); err != nil {
		return "", err
	}
	run, ckpt := c.String("run"), c.String("checkpoint")
	switch {
	case c.String("model") != "":
		return "", fmt.Errorf("--model is a diffusers folder, not a checkpoint of this tool (use --run or --checkpoint)")
	case ckpt != "":
		if _, err := os.Stat(ckpt); err != nil {
			return "", fmt.Errorf("checkpoint: %w", err)
		}
		return ckpt, nil
	case run != "":
		if _, err := os.Stat(run); err != nil {
			return "", fmt.Errorf("run directory: %w", err)
		}
		return checkpoint.Latest(run)
	}
	return "", fmt.Errorf("which model? give --run RUN_DIR, --checkpoint FILE or --model DIFFUSERS_DIR")
}

// precisionFlag is --precision of the commands that sample.
var precisionFlag = &cli.StringFlag{Name: "precision", Value: "float32", Usage: "the model's arithmetic: float32, bf16 (autocast, CPU with bfloat16 instructions or CUDA) or fp16 (autocast, CUDA); the sampler stays float32", EnvVars: []string{"DDPM_PRECISION"}}

// pipelineOptions reads --device, --threads and --precision; a precision
// the device cannot run is refused before any model is read.
func pipelineOptions(c *cli.Context) (pipeline.Options, error) {
	precision, err := diffusion.ParsePrecision(c.String("precision"))
	if err != nil {
		return pipeline.Options{}, fmt.Errorf("--precision: %w", err)
	}
	dev, err := setupDevice(c.String("device"), c.Int("threads"))
	if err != nil {
		return pipeline.Options{}, err
	}
	if err := precision.Check(dev); err != nil {
		return pipeline.Options{}, err
	}
	return pipeline.Options{Device: dev, Precision: precision}, nil
}

// loadPipeline loads the model named by the model flags.
func loadPipeline(c *cli.Context) (*pipeline.Pipeline, error) {
	if err := onlyOne(c, "model", "run", "checkpoint"); err != nil {
		return nil, err
	}
	if dir := c.String("model"); dir != "" {
		o, err := pipelineOptions(c)
		if err != nil {
			return nil, err
		}
		return pipeline.LoadDiffusers(dir, o)
	}
	path, err := checkpointPath(c)
	if err != nil {
		return nil, err
	}
	o, err := pipelineOptions(c)
	if err != nil {
		return nil, err
	}
	if o.Weights, err = checkpoint.ParseWeights(c.String("weights")); err != nil {
		return nil, fmt.Errorf("--weights: %w", err)
	}
	p, err := pipeline.Load(path, o)
	if errors.Is(err, fs.ErrNotExist) && c.String("run") != "" {
		// A training writing the run pruned that checkpoint between
		// listing and loading: take the newest again.
		if path, err = checkpoint.Latest(c.String("run")); err != nil {
			return nil, err
		}
		p, err = pipeline.Load(path, o)
	}
	return p, err
}

// sampleOptions reads the sampler flags for n images of p's model.
func sampleOptions(c *cli.Context, p *pipeline.Pipeline, n int) (pipeline.GenerateOptions, error) {
	// The pipeline's default sampling (the flags' defaults for a
	// checkpoint, the scheduler of a diffusers folder), changed by the
	// flags given.
	o := pipeline.GenerateOptions{Sampling: p.DefaultSampling()}
	var err error
	T := p.Schedule().T()
	if c.IsSet("sampler") {
		if o.Sampling.Sampler, err = sampler.ParseKind(c.String("sampler")); err != nil {
			return o, err
		}
		o.Sampling.Spacing = "" // the new sampler's default
	}
	if steps := c.Int("steps"); c.IsSet("steps") && (steps < 1 || steps > T) {
		return o, fmt.Errorf("--steps %d out of range [1, %d] (the model was trained with T=%d)", steps, T, T)
	}
	if c.IsSet("steps") {
		o.Sampling.Steps = c.Int("steps")
	}
	if sp := c.String("spacing"); sp != "" {
		if o.Sampling.Spacing, err = diffusion.ParseSpacing(sp); err != nil {
			return o, err
		}
	}
	o.Sampling.Eta = c.Float64("eta")
	if !(o.Sampling.Eta >= 0 && o.Sampling.Eta <= 1) {
		return o, fmt.Errorf("--eta %g out of range [0, 1]", o.Sampling.Eta)
	}
	if c.IsSet("variance") || o.Sampling.Variance == "" {
		if o.Sampling.Variance, err = sampler.ParseVariance(c.String("variance")); err != nil {
			return o, err
		}
	}
	// Settings of one sampler given to another would be ignored.
	for _, f := range []struct {
		flag string
		kind sampler.Kind
	}{{"eta", sampler.DDIM}, {"variance", sampler.DDPM}} {
		if givenHere(c, f.flag) && o.Sampling.Sampler != f.kind {
			return o, fmt.Errorf("--%s is for --sampler %s, and the sampler is %s", f.flag, f.kind, o.Sampling.Sampler)
		}
	}
	if c.IsSet("clip") || o.Sampling.Clip == "" {
		if o.Sampling.Clip, err = sampler.ParseClip(c.String("clip")); err != nil {
			return o, err
		}
	}
	o.Sampling.Guidance = c.Float64("guidance")
	if g := o.Sampling.Guidance; !(g >= 0 && g <= maxGuidance) {
		return o, fmt.Errorf("--guidance %g out of range [0, %g]", g, float64(maxGuidance))
	}
	info := p.Info()
	switch class := c.Int64("class"); {
	case class < -1:
		return o, fmt.Errorf("--class %d: give -1 (unconditional) or a class in [0, %d)", class, info.NumClasses)
	case class >= 0 && info.NumClasses == 0:
		return o, fmt.Errorf("--class %d: the model is unconditional (trained without --classes)", class)
	case class >= int64(info.NumClasses):
		return o, fmt.Errorf("--class %d out of range [0, %d)", class, info.NumClasses)
	case class >= 0:
		o.Labels = make([]int64, n)
		for i := range o.Labels {
			o.Labels[i] = class
		}
	case o.Sampling.Guidance != 0 && info.NumClasses == 0:
		return o, fmt.Errorf("--guidance needs a class-conditional model; this one is unconditional (train with --classes)")
	case o.Sampling.Guidance != 0:
		return o, fmt.Errorf("--guidance needs --class")
	}
	o.Seed = c.Uint64("seed")
	o.Batch = c.Int("batch")
	if o.Batch < 1 {
		return o, fmt.Errorf("--batch %d must be at least 1", o.Batch)
	}
	return o, nil
}

// maxGuidance bounds --guidance, as serve bounds a request's guidance: far
// past it the guided prediction overflows float32 and the samples come out
// NaN, which used to read as "the model's weights are broken".
const maxGuidance = serve.DefaultMaxGuidance

func runSample(c *cli.Context) error {
	n := c.Int("n")
	if err := checkRange("n", n, 1, maxImages); err != nil {
		return err
	}
	out, outDir, traj := c.String("out"), c.String("out-dir"), c.String("trajectory")
	if out == "" && outDir == "" && traj == "" {
		return fmt.Errorf("nothing to write: give --out, --out-dir or --trajectory")
	}
	for _, p := range []string{out, traj} {
		if p != "" && !strings.EqualFold(filepath.Ext(p), ".png") {
			return fmt.Errorf("%s: images are written as PNG; give a .png file name", p)
		}
		if p != "" {
			if err := checkWritableDir(filepath.Dir(p)); err != nil {
				return err
			}
		}
	}
	if outDir != "" {
		if err := os.MkdirAll(outDir, 0o755); err != nil {
			return fmt.Errorf("cannot create --out-dir: %w", err)
		}
	}
	p, err := loadPipeline(c)
	if err != nil {
		return err
	}
	defer p.Close()
	o, err := sampleOptions(c, p, n)
	if err != nil {
		return err
	}
	info := p.Info()
	ch, size := info.Channels, info.Size
	if traj != "" && (info.LatentChannels != ch || info.LatentSize != size) {
		return errors.New("--trajectory draws x_t, which a latent model samples as latents, not images")
	}
	bar := newProgress(c.App.Writer, c.Bool("quiet"), "sample", int64(n))
	o.OnBatch = func(done, total int) { bar.update(int64(done), "images") }
	var strip trajectory
	if traj != "" {
		o.Sampling.Callback = strip.record
	}
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt)
	defer stop()
	imgs, err := p.Generate(ctx, n, o)
	bar.finish()
	if err != nil {
		return err
	}
	if out != "" {
		if err := saveGrid(out, imgs); err != nil {
			return err
		}
		fmt.Fprintf(c.App.Writer, "ddpm: wrote %s (%d images)\n", out, n)
	}
	if outDir != "" {
		for i := range n {
			if err := images.SavePNG(filepath.Join(outDir, fmt.Sprintf("%06d.png", i)), imgs.Image(i)); err != nil {
				return err
			}
		}
		fmt.Fprintf(c.App.Writer, "ddpm: wrote %d images to %s\n", n, outDir)
	}
	if traj != "" {
		if err := strip.save(traj, ch, size); err != nil {
			return err
		}
		fmt.Fprintf(c.App.Writer, "ddpm: wrote %s (%d steps)\n", traj, len(strip.xt))
	}
	return nil
}

// saveGrid writes images as one PNG grid, as square as possible.
func saveGrid(path string, imgs *pipeline.Images) error {
	img, err := imgs.Grid(gridColumns(imgs.N), 2)
	if err != nil {
		return err
	}
	if err := images.SavePNG(path, img); err != nil {
		return fmt.Errorf("cannot write %s: %w", path, err)
	}
	return nil
}

// checkWritableDir fails early, before any sampling, when dir cannot take
// new files.
func checkWritableDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("cannot write to %s: %w", dir, err)
	}
	f, err := os.CreateTemp(dir, ".ddpm-write-test-*")
	if err != nil {
		return fmt.Errorf("cannot write to %s: %w", dir, err)
	}
	f.Close()
	return os.Remove(f.Name())
}

// trajectory collects the first image's x_t and predicted x_0 at up to
// maxFrames evenly spaced steps of the first batch.
type trajectory struct {
	xt, x0 [][]float32
	done   bool
}

const maxFrames = 12

func (tr *trajectory) record(step, total, t int, xt, x0 *torch.Tensor) error {
	if tr.done {
		return nil
	}
	every := max(1, (total+maxFrames-1)/maxFrames)
	if step%every != 0 && step != total-1 {
		return nil
	}
	s := torch.NewScope(torch.Inference)
	defer s.Close()
	for _, pair := range []struct {
		src *torch.Tensor
		dst *[][]float32
	}{{xt, &tr.xt}, {x0, &tr.x0}} {
		first := s.To(s.Clamp(s.Narrow(pair.src, 0, 0, 1), -1, 1), torch.CPU)
		v, err := first.Float32s()
		if err != nil {
			return err
		}
		*pair.dst = append(*pair.dst, v)
	}
	if step == total-1 {
		tr.done = true
	}
	return s.Err()
}

func (tr *trajectory) save(path string, ch, size int) error {
	var pix []float32
	for _, row := range [][][]float32{tr.xt, tr.x0} {
		for _, v := range row {
			pix = append(pix, v...)
		}
	}
	img, err := images.Grid(pix, 2*len(tr.xt), ch, size, size, len(tr.xt), 2)
	if err != nil {
		return err
	}
	return images.SavePNG(path, img)
}
