// Package train trains diffusion models (Ho et al. 2020, Algorithm 1, with
// the refinements of later papers that Config names): the Trainer owns the
// loop, the optimizer, the EMA of the weights, the random state and the
// checkpoints (package checkpoint), takes a context, and stops cleanly with
// a checkpoint when it is cancelled. It can run data-parallel over a
// torch.ProcessGroup (dist.go). Sampling code never imports this package.
package train

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"time"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/diffusion/checkpoint"
	"github.com/ddpm-go/ddpm/diffusion/data"
	"github.com/ddpm-go/ddpm/diffusion/nn"
	"github.com/ddpm-go/ddpm/diffusion/optim"
	"github.com/ddpm-go/ddpm/torch"
)

// Model is a diffusion.Model with parameters and a training switch
// (dropout). A model that also has a `Config() unet.Config` method (the
// U-Net does) has that configuration recorded in every checkpoint, which is
// what lets pipeline.Load rebuild it.
type Model interface {
	diffusion.Model
	nn.Module
	SetTraining(train bool, gen *torch.Generator)
}

// BatchSource yields training batches; the trainer resumes a run by skipping
// the batches already used, so a source must be deterministic given its seed.
type BatchSource interface {
	Next(ctx context.Context) (data.Batch, error)
	Skip(batches int)
}

// Metrics is one record of the training log, averaged over the steps since
// the previous record.
type Metrics struct {
	Step           int64              `json:"step"`
	Loss           float64            `json:"loss"`
	LossByQuartile []*float64         `json:"loss_by_quartile"` // t in [0,T/4), ... ; null when no sample fell there
	LR             float64            `json:"lr"`
	GradNorm       float64            `json:"grad_norm"`
	ImagesPerSec   float64            `json:"images_per_s"`
	EvalMSE        *float64           `json:"eval_eps_mse,omitempty"` // held-out ε-prediction MSE
	EvalPSNR       *float64           `json:"eval_x0_psnr,omitempty"` // held-out PSNR of the implied x0, dB
	Extra          map[string]float64 `json:"extra,omitempty"`        // figures added by hooks (e.g. offline FID)
}

// Trainer owns the training loop (Ho et al. 2020, Algorithm 1): the
// optimizer, the EMA of the weights, the random state and the checkpoints.
// It does not own the model, whose parameters it updates in place.
//
// A Trainer is not safe for concurrent use: one goroutine runs it.
type Trainer struct {
	cfg   Config
	sched *diffusion.Schedule
	model Model
	dev   torch.Device
	shape []int64 // C, H, W

	params  []nn.Param
	opt     *optim.AdamW
	ema     *optim.EMA
	gen     *torch.Generator
	history *lossHistory
	step    int64
	scaler  *lossScaler // fp16 only
	// positioned is whether a Run has moved the batch source to step
	// already: later Runs continue that source where the last one stopped.
	positioned bool

	// Reseeded reports that the last Resume read a checkpoint written on
	// another kind of device, whose noise generator state this device's
	// generator cannot take: the noise generator was seeded from (seed,
	// step) instead, so the run goes on with other noise than an
	// uninterrupted one (checkpoint.Generator).
	Reseeded bool

	// Dir is where checkpoints go; empty disables them.
	Dir string
	// ClassNames name the labels of a class-conditional model; they are
	// recorded in every checkpoint.
	ClassNames []string
	// Data is the path the training data was opened from (data.Dataset's
	// Path), recorded in every checkpoint so evaluation can find it.
	Data string
	// Autoencoder, for a model trained on an autoencoder's latents, is
	// recorded in every checkpoint so that the pipeline decodes.
	Autoencoder *checkpoint.Autoencoder
	// OnLog receives every metrics record.
	OnLog func(Metrics)
	// AfterStep runs after every step, with the path of the checkpoint
	// written at that step ("" if none), for sample grids and evaluations;
	// figures it returns join the next metrics record.
	AfterStep func(step int64, checkpoint string) (map[string]float64, error)
	// Held is a held-out set for the evaluation every EvalEvery steps; nil
	// evaluates nothing, and an empty one is refused when Run starts.
	Held *data.Dataset
	// Dist, when set, makes this trainer one rank of a data-parallel run
	// (see train_dist.go): the source yields this rank's shard, and only
	// rank 0 writes checkpoints.
	Dist *torch.ProcessGroup

	gradSync *torch.GradSync // averages gradients over Dist's ranks
	commTime time.Duration   // spent waiting for the gradient all-reduce
	// genBefore is gen's state before the step in flight (with several
	// ranks), what a checkpoint after a failed collective must record.
	genBefore []byte

	lastCheckpoint string
	// What Latest reports: the last step's loss, and the images and time
	// of the steps Run has taken so far.
	lastLoss  float64
	runImages int
	runStart  time.Time
	extra     map[string]float64
}

// New prepares training of model on images of shape (C, H, W). It applies
// the library's thread default (torch.UseDefaultThreads: every CPU) unless
// the program set a thread count itself. A U-Net built with
// unet.NewForTraining trains fastest (on the CPU; any model trains).
func New(model Model, sched *diffusion.Schedule, cfg Config, dev torch.Device, shape []int64) (*Trainer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if model == nil || sched == nil {
		return nil, errors.New("train: nil model or schedule")
	}
	if len(shape) != 3 {
		return nil, fmt.Errorf("train: image shape %v must be (C, H, W)", shape)
	}
	if err := torch.UseDefaultThreads(); err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	if err := nn.CheckDevice(model.Params(), dev); err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	cfg = cfg.WithDefaults()
	tr := &Trainer{cfg: cfg, sched: sched, model: model, dev: dev, shape: shape, params: model.Params()}
	var err error
	if tr.gen, err = torch.NewGenerator(cfg.Seed, dev); err != nil {
		return nil, err
	}
	if tr.opt, err = optim.NewAdamW(tr.params, cfg.optimizer()); err != nil {
		tr.Close()
		return nil, fmt.Errorf("train: %w", err)
	}
	if tr.ema, err = optim.NewEMA(tr.params, cfg.EMADecay, !cfg.NoEMAWarmup); err != nil {
		tr.Close()
		return nil, err
	}
	if cfg.Sampling == LossAware {
		tr.history = newLossHistory(sched.T())
	}
	if err := cfg.Precision.Check(dev); err != nil {
		tr.Close()
		return nil, fmt.Errorf("train: %w", err)
	}
	if cfg.Precision == diffusion.FP16 {
		tr.scaler = newLossScaler()
	}
	return tr, nil
}

// Step is the number of optimizer steps taken.
func (tr *Trainer) Step() int64 { return tr.step }

// Config is the training configuration, defaults filled in.
func (tr *Trainer) Config() Config { return tr.cfg }

// EMA is the moving average of the weights (what sampling should use).
func (tr *Trainer) EMA() *optim.EMA { return tr.ema }

// LastCheckpoint is the path of the newest checkpoint written or resumed.
func (tr *Trainer) LastCheckpoint() string { return tr.lastCheckpoint }

// Latest returns the loss of the last step and the images per second that
// Run has trained so far (what a progress line shows from the first step;
// the metrics records average over their interval).
func (tr *Trainer) Latest() (loss, imagesPerSec float64) {
	if tr.runImages == 0 {
		return tr.lastLoss, 0
	}
	return tr.lastLoss, float64(tr.runImages) / time.Since(tr.runStart).Seconds()
}

// Close frees the optimizer state, the EMA and the generator.
func (tr *Trainer) Close() {
	if tr.gradSync != nil {
		tr.gradSync.Close()
	}
	if tr.opt != nil {
		tr.opt.Close()
	}
	if tr.ema != nil {
		tr.ema.Close()
	}
	tr.gen.Close()
	tr.opt, tr.ema, tr.gen, tr.gradSync = nil, nil, nil, nil
}

// NonFiniteLossError stops a run whose loss became NaN or infinite.
type NonFiniteLossError struct {
	Step       int64
	Loss       float64
	Checkpoint string              // last good checkpoint, "" if none
	Precision  diffusion.Precision // the run's precision
}

func (e *NonFiniteLossError) Error() string {
	where := "no checkpoint was written yet"
	if e.Checkpoint != "" {
		where = "the last good checkpoint is " + e.Checkpoint
	}
	in, try := "", "try a lower learning rate or stronger gradient clipping"
	if e.Precision != "" && e.Precision != diffusion.Float32 {
		in = " in " + string(e.Precision)
		try = "try a lower learning rate, stronger gradient clipping or precision float32"
	}
	return fmt.Sprintf("train: loss became %v at step %d%s; stopped without updating the weights (%s); %s", e.Loss, e.Step, in, where, try)
}

// Run trains until cfg.Steps. When ctx is cancelled it writes a checkpoint
// and returns an error wrapping ctx.Err(). With several ranks (Dist), a
// cancelled context stops every rank after the same step, one step later
// at most; a rank stopped by another returns an error wrapping
// context.Canceled.
//
// The first Run after New or Resume skips the batches of the steps already
// taken (src.Skip(Step())), so it expects a source at its first batch. A
// later Run, after one that was cancelled or failed, continues from where
// that one stopped and expects the same source, not a fresh one.
func (tr *Trainer) Run(ctx context.Context, src BatchSource) error {
	// Checked before the first step: Evaluate would fail on an empty set
	// only at the first evaluation, after all the steps before it.
	if tr.cfg.EvalEvery > 0 && tr.Held != nil && tr.Held.N == 0 {
		return fmt.Errorf("train: EvalEvery %d needs held-out images, and Trainer.Held has none", tr.cfg.EvalEvery)
	}
	// The whole run on one OS thread: libtorch's CPU results depend on the
	// OS thread a call runs on, and a run whose goroutine moved between
	// threads drifted from an identical one (about 1e-8 after 15 to 60 steps
	// of the U-Net). Pinned, identical and resumed runs agree bit for bit.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := tr.syncRanks(src); err != nil {
		return err
	}
	if !tr.positioned {
		src.Skip(int(tr.step))
		tr.positioned = true
	}
	// Ranks stop together: one that left on its own context would leave the
	// others blocked in a collective that then fails, and rank 0 would exit
	// without a checkpoint. So a rank reads its batch whatever its context
	// (without one it could not join the step's collectives), asks to stop
	// in the step's loss all-reduce, and every rank ends after that step.
	_, world := tr.distRank()
	group := world > 1
	next := ctx
	if group {
		next = context.WithoutCancel(ctx)
	}
	tr.model.SetTraining(true, tr.gen) // with several ranks, trainStep sets each step's own
	defer tr.model.SetTraining(false, nil)
	var acc window
	start := time.Now()
	tr.runImages, tr.runStart = 0, start
	for tr.step < tr.cfg.Steps {
		if err := ctx.Err(); err != nil && !group {
			return tr.interrupted(err)
		}
		batch, err := src.Next(next)
		if err != nil {
			if ctx.Err() != nil && !group {
				return tr.interrupted(ctx.Err())
			}
			return fmt.Errorf("train: reading batch %d: %w", tr.step+1, err)
		}
		r, err := tr.trainStep(batch, group && ctx.Err() != nil)
		var ce *collectiveError
		if errors.As(err, &ce) {
			return tr.saveAfterFailure(err)
		}
		if err != nil {
			return err
		}
		if r.stop {
			if err := ctx.Err(); err != nil {
				return tr.interrupted(err)
			}
			return tr.interrupted(errPeerStopped)
		}
		tr.lastLoss, tr.runImages = r.loss, tr.runImages+r.images
		acc.add(r, tr.sched.T())
		ckpt := ""
		if tr.step%tr.cfg.CheckpointEvery == 0 || tr.step == tr.cfg.Steps {
			if ckpt, err = tr.checkpoint(); err != nil {
				return err
			}
		}
		if tr.AfterStep != nil {
			extra, err := tr.AfterStep(tr.step, ckpt)
			if err != nil {
				if ctx.Err() == nil {
					return err
				}
				// The hook stopped because the run was cancelled. The
				// other ranks are on their way to the next step's
				// collectives, and that step tells them to stop.
				if !group || tr.step == tr.cfg.Steps {
					return tr.interrupted(ctx.Err())
				}
				continue
			}
			for k, v := range extra {
				if tr.extra == nil {
					tr.extra = map[string]float64{}
				}
				tr.extra[k] = v
			}
		}
		if tr.step%tr.cfg.LogEvery == 0 || tr.step == tr.cfg.Steps {
			m := acc.metrics(tr.step, time.Since(start))
			if tr.cfg.EvalEvery > 0 && tr.Held != nil && tr.step%tr.cfg.EvalEvery == 0 {
				mse, psnr, err := tr.Evaluate(tr.Held, 256)
				if err != nil {
					return err
				}
				m.EvalMSE, m.EvalPSNR = &mse, &psnr
			}
			m.Extra, tr.extra = tr.extra, nil
			if tr.OnLog != nil {
				tr.OnLog(m)
			}
			acc, start = window{}, time.Now()
		}
	}
	return nil
}

// errPeerStopped is why a rank whose own context is live stops: another
// rank's was cancelled.
var errPeerStopped = fmt.Errorf("another rank was stopped: %w", context.Canceled)

func (tr *Trainer) interrupted(cause error) error {
	if _, err := tr.checkpoint(); err != nil {
		return errors.Join(fmt.Errorf("train: interrupted at step %d: %w", tr.step, cause), err)
	}
	return fmt.Errorf("train: interrupted at step %d: %w", tr.step, cause)
}

// checkpoint writes a checkpoint unless checkpoints are off or one exists
// for this step already; it returns the path written, if any.
func (tr *Trainer) checkpoint() (string, error) {
	if tr.Dir == "" || !tr.writer() {
		return "", nil
	}
	if tr.lastCheckpoint != "" && checkpoint.StepOf(tr.lastCheckpoint) == tr.step {
		return "", nil
	}
	return tr.SaveCheckpoint()
}

// stepResult is what one step reports to the log.
type stepResult struct {
	loss      float64
	perSample []float64
	ts        []int64
	lr, norm  float64
	images    int
	stop      bool // some rank asked to stop after this step
}

// trainStep is one iteration of Algorithm 1 with the optional refinements
// of TrainConfig; it runs in one scope, so nothing outlives it but the
// updated parameters and optimizer state. stop asks the ranks to stop after
// this step (with several ranks; alone, Run stops before the step).
func (tr *Trainer) trainStep(b data.Batch, stop bool) (stepResult, error) {
	s, err := tr.stepScope()
	if err != nil {
		return stepResult{}, err
	}
	defer s.Close()
	n := int64(b.N)
	shape := append([]int64{n}, tr.shape...)
	// With several ranks, the draws are made for the global batch and this
	// rank uses its slice [off, off+n) of them.
	rank, world := tr.distRank()
	if world > 1 && b.N != tr.cfg.BatchSize {
		return stepResult{}, fmt.Errorf("train: rank %d: batch %d has %d images; data-parallel training needs full batches of %d on every rank (load with DropLast)",
			rank, tr.step+1, b.N, tr.cfg.BatchSize)
	}
	off, global := rank*b.N, b.N*world
	x0 := s.FromFloat32s(b.Images, shape...)
	if tr.dev != torch.CPU {
		x0 = s.To(x0, tr.dev)
	}
	// Timesteps, label dropout: a Go generator seeded by (seed, step), so a
	// resumed run draws exactly what an uninterrupted one would.
	rng := rand.New(rand.NewPCG(tr.cfg.Seed, uint64(tr.step)))
	allTs, allWeights := tr.drawTimesteps(rng, global)
	ts, weights := allTs[off:off+b.N], allWeights[off:off+b.N]
	t := tr.toDevice(s, s.FromInt64s(ts, n))
	var labels *torch.Tensor
	if tr.cfg.NumClasses > 0 {
		if len(b.Labels) != b.N {
			return stepResult{}, fmt.Errorf("train: class-conditional training needs labels, and batch %d has none", tr.step+1)
		}
		ls := make([]int64, b.N)
		copy(ls, b.Labels)
		for i, l := range ls {
			// Checked here: on CUDA an index out of range is a device-side
			// assert that leaves the process unable to use the GPU, even
			// to write a checkpoint.
			if l < 0 || l >= int64(tr.cfg.NumClasses) {
				return stepResult{}, fmt.Errorf("train: batch %d: image %d has label %d, outside [0, %d)", tr.step+1, i, l, tr.cfg.NumClasses)
			}
		}
		for i := range global {
			if rng.Float64() < tr.cfg.LabelDropout && i >= off && i < off+b.N {
				ls[i-off] = int64(tr.cfg.NumClasses) // the null label
			}
		}
		labels = tr.toDevice(s, s.FromInt64s(ls, n))
	}
	var eps *torch.Tensor
	if world == 1 {
		eps = s.Randn(shape, torch.Float32, tr.dev, tr.gen)
	} else {
		if tr.genBefore, err = tr.gen.State(); err != nil {
			return stepResult{}, err
		}
		eps = s.Narrow(s.Randn(append([]int64{int64(global)}, tr.shape...), torch.Float32, tr.dev, tr.gen), 0, int64(off), n)
		drop, err := tr.dropoutGenerator(rank)
		if err != nil {
			return stepResult{}, err
		}
		defer drop.Close()
		tr.model.SetTraining(true, drop)
	}
	xt := tr.sched.QSample(s, x0, t, eps)
	out := tr.model.Forward(s, xt, t, labels)
	if tr.cfg.Precision != diffusion.Float32 {
		out = s.ToDType(out, torch.Float32) // the loss is computed in float32
	}
	target := tr.sched.TrainingTarget(s, tr.cfg.Target, x0, eps, t)
	perSample := s.Mean(s.MSELoss(out, target, torch.ReduceNone), []int64{1, 2, 3}, false)
	w := tr.lossWeights(ts, weights)
	loss := s.Mean(s.Mul(perSample, tr.toDevice(s, s.FromFloat32s(w, n))), nil, false)
	if err := s.Err(); err != nil {
		return stepResult{}, fmt.Errorf("train: step %d: %w", tr.step+1, err)
	}
	var lv float64
	var per []float64
	if world == 1 {
		if lv, err = loss.Item(); err != nil {
			return stepResult{}, err
		}
	} else {
		// The global batch's per-sample losses and mean loss, the same on
		// every rank (so all of them stop together on a non-finite loss).
		if per, err = s.ToDType(perSample, torch.Float64).Float64s(); err != nil {
			return stepResult{}, err
		}
		var anyStop bool
		if per, anyStop, err = tr.globalLosses(per, off, global, stop); err != nil {
			return stepResult{}, err
		}
		stop = anyStop
		lv = 0
		for i, wi := range tr.lossWeights(allTs, allWeights) {
			lv += float64(wi) * per[i]
		}
		lv /= float64(global)
	}
	if math.IsNaN(lv) || math.IsInf(lv, 0) {
		return stepResult{}, &NonFiniteLossError{Step: tr.step + 1, Loss: lv, Checkpoint: tr.lastCheckpoint, Precision: tr.cfg.Precision}
	}
	if tr.scaler != nil {
		s.Backward(s.MulScalar(loss, tr.scaler.scale))
	} else {
		s.Backward(loss)
	}
	if err := s.Err(); err != nil {
		return stepResult{}, fmt.Errorf("train: step %d: backward: %w", tr.step+1, err)
	}
	if tr.gradSync != nil {
		start := time.Now()
		if err := tr.gradSync.Finish(); err != nil {
			return stepResult{}, &collectiveError{fmt.Errorf("train: step %d: %w", tr.step+1, err)}
		}
		tr.commTime += time.Since(start)
	}
	if tr.scaler != nil {
		if err := tr.scaler.unscale(tr.params); err != nil {
			return stepResult{}, err
		}
	}
	norm, err := torch.ClipGradNorm(nn.Tensors(tr.params), tr.cfg.GradClip)
	if err != nil {
		return stepResult{}, err
	}
	lr := tr.opt.LR(tr.opt.Steps() + 1)
	// With a loss scale, overflowing gradients skip the update (and shrink
	// the scale) instead of reaching the weights, as torch.cuda.amp does.
	if tr.scaler == nil || tr.scaler.update(norm) {
		if lr, err = tr.opt.Step(); err != nil {
			return stepResult{}, err
		}
		if err := tr.ema.Update(tr.params); err != nil {
			return stepResult{}, err
		}
	}
	if err := tr.opt.ZeroGrad(); err != nil {
		return stepResult{}, err
	}
	if world == 1 {
		if per, err = s.ToDType(perSample, torch.Float64).Float64s(); err != nil {
			return stepResult{}, err
		}
	}
	if tr.history != nil {
		tr.history.record(allTs, per)
	}
	tr.step++
	return stepResult{loss: lv, perSample: per, ts: allTs, lr: lr, norm: norm, images: global, stop: stop}, nil
}

// stepScope is where a training step runs: with autocast for bf16 and fp16.
func (tr *Trainer) stepScope() (*torch.Scope, error) {
	if dt, ok := tr.cfg.Precision.Autocast(); ok {
		return torch.NewAutocastScope(torch.Grad, dt)
	}
	return torch.NewScope(torch.Grad), nil
}

func (tr *Trainer) toDevice(s *torch.Scope, t *torch.Tensor) *torch.Tensor {
	if tr.dev == torch.CPU {
		return t
	}
	return s.To(t, tr.dev)
}

func (tr *Trainer) drawTimesteps(rng *rand.Rand, n int) ([]int64, []float64) {
	if tr.history != nil {
		return tr.history.draw(rng, n)
	}
	ts := make([]int64, n)
	ws := make([]float64, n)
	for i := range ts {
		ts[i] = rng.Int64N(int64(tr.sched.T()))
		ws[i] = 1
	}
	return ts, ws
}

// lossWeights combines importance weights with min-SNR-γ weighting, which
// caps the weight of low-noise timesteps: for ε-prediction min(SNR, γ)/SNR,
// for x0 min(SNR, γ), for v min(SNR, γ)/(SNR+1) (Hang et al. 2023, eq. 9).
func (tr *Trainer) lossWeights(ts []int64, importance []float64) []float32 {
	w := make([]float32, len(ts))
	for i, t := range ts {
		v := importance[i]
		if g := tr.cfg.MinSNRGamma; g > 0 {
			snr := tr.sched.At(int(t)).SNR
			switch tr.cfg.Target {
			case diffusion.Epsilon:
				v *= math.Min(snr, g) / snr
			case diffusion.X0:
				v *= math.Min(snr, g)
			case diffusion.V:
				v *= math.Min(snr, g) / (snr + 1)
			}
		}
		w[i] = float32(v)
	}
	return w
}

// window accumulates step results between two log records.
type window struct {
	steps, images  int
	loss, lr, norm float64
	qSum           [4]float64
	qN             [4]int
}

func (w *window) add(r stepResult, T int) {
	w.steps++
	w.images += r.images
	w.loss += r.loss
	w.lr = r.lr
	w.norm += r.norm
	for i, t := range r.ts {
		q := int(t) * 4 / T
		w.qSum[q] += r.perSample[i]
		w.qN[q]++
	}
}

func (w *window) metrics(step int64, elapsed time.Duration) Metrics {
	m := Metrics{Step: step, LR: w.lr, LossByQuartile: make([]*float64, 4)}
	if w.steps > 0 {
		m.Loss = w.loss / float64(w.steps)
		m.GradNorm = w.norm / float64(w.steps)
	}
	if s := elapsed.Seconds(); s > 0 {
		m.ImagesPerSec = float64(w.images) / s
	}
	for q := range 4 {
		if w.qN[q] > 0 {
			v := w.qSum[q] / float64(w.qN[q])
			m.LossByQuartile[q] = &v
		}
	}
	return m
}
