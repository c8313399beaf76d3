package train

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"

	"github.com/ddpm-go/ddpm/diffusion/checkpoint"
	"github.com/ddpm-go/ddpm/diffusion/nn"
	"github.com/ddpm-go/ddpm/diffusion/unet"
	"github.com/ddpm-go/ddpm/torch"
)

// unetConfigured is implemented by *unet.UNet.
type unetConfigured interface{ Config() unet.Config }

// keyOptimizerSteps is the metadata key (in checkpoint.Meta.Extra) of the
// optimizer's own step count. It falls behind the trainer's step when the
// fp16 loss scale skips updates, and AdamW's bias correction and the
// learning-rate schedule follow it, so a resumed run needs it; files
// without it were written when the two counts were always equal.
const keyOptimizerSteps = "optimizer_steps"

// SaveCheckpoint writes the complete training state to Dir (package
// checkpoint's format, atomically) and prunes all but the newest
// KeepCheckpoints files up to this step. It returns the path.
func (tr *Trainer) SaveCheckpoint() (string, error) {
	if tr.Dir == "" {
		return "", errors.New("train: no checkpoint directory (Trainer.Dir)")
	}
	tensors := make(map[string]*torch.Tensor)
	for _, p := range tr.params {
		tensors[checkpoint.ModelPrefix+p.Name] = p.T
	}
	for _, p := range tr.ema.Params() {
		tensors[checkpoint.EMAPrefix+p.Name] = p.T
	}
	for k, v := range tr.opt.State() {
		tensors[k] = v
	}
	s := torch.NewScope(torch.NoGrad)
	defer s.Close()
	state, err := tr.gen.State()
	if err != nil {
		return "", fmt.Errorf("train: checkpoint: %w", err)
	}
	tensors[checkpoint.RNGState] = s.FromBytes(state, torch.Uint8, int64(len(state)))
	if tr.history != nil {
		tensors[checkpoint.ResamplerLosses] = s.FromFloat64s(tr.history.losses, int64(len(tr.history.losses)))
		tensors[checkpoint.ResamplerCounts] = s.FromInt64s(tr.history.counts, int64(len(tr.history.counts)))
	}
	if err := s.Err(); err != nil {
		return "", fmt.Errorf("train: checkpoint: %w", err)
	}
	trainJSON, err := json.Marshal(tr.cfg)
	if err != nil {
		return "", fmt.Errorf("train: checkpoint: %w", err)
	}
	meta := checkpoint.Meta{
		Step: tr.step, EMAUpdates: tr.ema.Updates(), Schedule: tr.sched.Config(), Target: tr.cfg.Target,
		ClassNames: tr.ClassNames, Data: tr.Data, Train: trainJSON, Autoencoder: tr.Autoencoder,
		Extra: map[string]string{keyOptimizerSteps: strconv.FormatInt(tr.opt.Steps(), 10), checkpoint.KeyRNGDevice: checkpoint.DeviceKind(tr.dev)},
	}
	if m, ok := tr.model.(unetConfigured); ok {
		cfg := m.Config()
		meta.Model = &cfg
	}
	if tr.scaler != nil {
		meta.LossScale = fmt.Sprintf("%g %d", tr.scaler.scale, tr.scaler.goodSteps)
	}
	path := filepath.Join(tr.Dir, checkpoint.Name(tr.step))
	if err := checkpoint.Write(path, tensors, meta); err != nil {
		return "", fmt.Errorf("train: %w", err)
	}
	tr.lastCheckpoint = path
	if err := checkpoint.Prune(tr.Dir, tr.cfg.KeepCheckpoints, tr.step); err != nil {
		return "", fmt.Errorf("train: %w", err)
	}
	return path, nil
}

// Resume restores the complete training state of a checkpoint written by
// SaveCheckpoint for the same model configuration. It checks everything
// before it changes anything: on error the trainer is as it was.
func (tr *Trainer) Resume(path string) error {
	meta, err := checkpoint.ReadMeta(path)
	if err != nil {
		return fmt.Errorf("train: %w", err)
	}
	fail := func(format string, args ...any) error {
		return fmt.Errorf("train: cannot resume from %s: %s", path, fmt.Sprintf(format, args...))
	}
	// Weights of the same shapes trained for another noise schedule or
	// target would load and go on training for the wrong one.
	if meta.Schedule != tr.sched.Config() {
		return fail("it was trained with the noise schedule %+v, this run has %+v", meta.Schedule, tr.sched.Config())
	}
	if meta.Target != tr.cfg.Target {
		return fail("it was trained to predict %q, this run %q", meta.Target, tr.cfg.Target)
	}
	s := torch.NewScope(torch.NoGrad)
	defer s.Close()
	all, _, err := s.LoadSafetensors(path, torch.CPU)
	if err != nil {
		return fmt.Errorf("train: %w", err)
	}
	// 1. Check every part against this trainer.
	model, ema := checkpoint.Part(all, checkpoint.ModelPrefix, false), checkpoint.Part(all, checkpoint.EMAPrefix, false)
	opt := checkpoint.Part(all, checkpoint.OptimizerPrefix, true)
	for _, part := range []struct {
		what   string
		params []nn.Param
		src    map[string]*torch.Tensor
	}{{"model", tr.params, model}, {"ema", tr.ema.Params(), ema}, {"optimizer state", tr.opt.Buffers(), opt}} {
		if err := nn.CheckStateDict(part.params, part.src); err != nil {
			return fail("%s: %v", part.what, err)
		}
	}
	rng, ok := all[checkpoint.RNGState]
	if !ok {
		return fail("no random generator state")
	}
	state, err := rng.Bytes()
	if err != nil {
		return fail("generator state: %v", err)
	}
	var losses []float64
	var counts []int64
	if tr.history != nil {
		if l, c := all[checkpoint.ResamplerLosses], all[checkpoint.ResamplerCounts]; l != nil && c != nil {
			var err1, err2 error
			losses, err1 = l.Float64s()
			counts, err2 = c.Int64s()
			if err1 != nil || err2 != nil || len(losses) != len(tr.history.losses) || len(counts) != len(tr.history.counts) {
				return fail("loss-aware sampler state does not fit T=%d", tr.sched.T())
			}
		}
	}
	var scale float64
	var good int
	if tr.scaler != nil && meta.LossScale != "" {
		if _, err := fmt.Sscan(meta.LossScale, &scale, &good); err != nil {
			return fail("bad loss scale %q", meta.LossScale)
		}
	}
	optSteps := meta.Step
	if v, ok := meta.Extra[keyOptimizerSteps]; ok {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 || n > meta.Step {
			return fail("bad optimizer step count %q (the run is at step %d)", v, meta.Step)
		}
		optSteps = n
	}
	// The generator is made now, and replaces the trainer's once nothing
	// can fail.
	gen, reseeded, err := checkpoint.Generator(state, meta.Extra[checkpoint.KeyRNGDevice], tr.dev, tr.cfg.Seed, meta.Step)
	if err != nil {
		return fail("%v", err)
	}
	// 2. Restore.
	for _, part := range []struct {
		params []nn.Param
		src    map[string]*torch.Tensor
	}{{tr.params, model}, {tr.ema.Params(), ema}, {tr.opt.Buffers(), opt}} {
		if err := nn.LoadStateDict(part.params, part.src); err != nil {
			gen.Close()
			return fail("%v", err)
		}
	}
	tr.gen.Close()
	tr.gen, tr.Reseeded = gen, reseeded
	if losses != nil {
		copy(tr.history.losses, losses)
		copy(tr.history.counts, counts)
	}
	if tr.scaler != nil && meta.LossScale != "" {
		tr.scaler.scale, tr.scaler.goodSteps = scale, good
	}
	tr.opt.SetSteps(optSteps)
	tr.ema.SetUpdates(meta.EMAUpdates)
	tr.step = meta.Step
	tr.positioned = false
	tr.lastCheckpoint = path
	return nil
}
