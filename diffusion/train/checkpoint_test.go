package train

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/diffusion/checkpoint"
	"github.com/ddpm-go/ddpm/diffusion/optim"
	"github.com/ddpm-go/ddpm/torch"
)

// A run whose loss scale skipped updates, cut in two by a checkpoint,
// resumes with the optimizer step count it had (AdamW's bias correction
// and the learning-rate warm-up follow it, not the trainer's step) and ends
// as the uninterrupted run does.
func TestResumeKeepsOptimizerStepsOfSkippedUpdates(t *testing.T) {
	cfg := Config{Steps: 12, BatchSize: 4, Seed: 9, CheckpointEvery: 6, LogEvery: 6,
		EMADecay: 0.9, Optimizer: optim.AdamWConfig{LR: 1e-2, WarmupSteps: 3}}
	// A scale far above float32's range overflows the gradients of the
	// first steps, which are skipped while the scale halves: the CPU way to
	// get the skips of an fp16 run.
	const overflowing = 1e40
	full, fm := newTestTrainer(t, t.TempDir(), cfg)
	defer fm.Close()
	defer full.Close()
	full.scaler = &lossScaler{scale: overflowing}
	if err := full.Run(context.Background(), &fakeSource{seed: 1, n: 4, shape: [3]int{1, 8, 8}}); err != nil {
		t.Fatal(err)
	}
	if full.opt.Steps() == 0 || full.opt.Steps() >= full.Step() {
		t.Fatalf("optimizer steps %d of %d: the test needs some steps skipped and some taken", full.opt.Steps(), full.Step())
	}

	dir := t.TempDir()
	half := cfg
	half.Steps = 6
	first, m1 := newTestTrainer(t, dir, half)
	first.scaler = &lossScaler{scale: overflowing}
	if err := first.Run(context.Background(), &fakeSource{seed: 1, n: 4, shape: [3]int{1, 8, 8}}); err != nil {
		t.Fatal(err)
	}
	atHalf := first.opt.Steps()
	first.Close()
	m1.Close()

	second, m2 := newTestTrainer(t, dir, cfg)
	defer m2.Close()
	defer second.Close()
	second.scaler = newLossScaler()
	if err := second.Resume(filepath.Join(dir, checkpoint.Name(6))); err != nil {
		t.Fatal(err)
	}
	if second.opt.Steps() != atHalf {
		t.Fatalf("resumed with %d optimizer steps, the run had taken %d", second.opt.Steps(), atHalf)
	}
	if err := second.Run(context.Background(), &fakeSource{seed: 1, n: 4, shape: [3]int{1, 8, 8}}); err != nil {
		t.Fatal(err)
	}
	if full.opt.Steps() != second.opt.Steps() || full.EMA().Updates() != second.EMA().Updates() {
		t.Fatalf("optimizer steps %d/%d, EMA updates %d/%d (uninterrupted/resumed)",
			full.opt.Steps(), second.opt.Steps(), full.EMA().Updates(), second.EMA().Updates())
	}
	sameValues(t, "model", fm.Params(), m2.Params())
	sameValues(t, "optimizer", full.opt.Buffers(), second.opt.Buffers())
}

// A checkpoint written without the optimizer's own step count (before it
// was recorded) resumes with the trainer's step as that count.
func TestResumeWithoutOptimizerStepsUsesTheStep(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Steps: 3, BatchSize: 2, CheckpointEvery: 3, Optimizer: optim.AdamWConfig{LR: 1e-3}}
	first, m1 := newTestTrainer(t, dir, cfg)
	defer m1.Close()
	defer first.Close()
	if err := first.Run(context.Background(), &fakeSource{n: 2, shape: [3]int{1, 8, 8}}); err != nil {
		t.Fatal(err)
	}
	// Rewrite the checkpoint as an older version wrote it, with a wrong
	// optimizer count first to see that a recorded one is used.
	path := first.LastCheckpoint()
	first.opt.SetSteps(1)
	if _, err := first.SaveCheckpoint(); err != nil {
		t.Fatal(err)
	}
	meta, err := checkpoint.ReadMeta(path)
	if err != nil || meta.Extra[keyOptimizerSteps] != "1" {
		t.Fatalf("metadata %v (%v), want %s 1", meta.Extra, err, keyOptimizerSteps)
	}
	second, m2 := newTestTrainer(t, dir, cfg)
	defer m2.Close()
	defer second.Close()
	if err := second.Resume(path); err != nil || second.opt.Steps() != 1 {
		t.Fatalf("resume: %v, optimizer steps %d, want 1", err, second.opt.Steps())
	}
	rewriteCheckpoint(t, path, path, func(_ *torch.Scope, _ map[string]*torch.Tensor, meta *checkpoint.Meta) {
		delete(meta.Extra, keyOptimizerSteps)
	})
	third, m3 := newTestTrainer(t, dir, cfg)
	defer m3.Close()
	defer third.Close()
	if err := third.Resume(path); err != nil || third.opt.Steps() != 3 {
		t.Fatalf("resume: %v, optimizer steps %d, want 3", err, third.opt.Steps())
	}
}

// rewriteCheckpoint writes the checkpoint at src to dst (which may be src)
// with what edit changes of its tensors and metadata.
func rewriteCheckpoint(t *testing.T, src, dst string, edit func(s *torch.Scope, all map[string]*torch.Tensor, meta *checkpoint.Meta)) {
	t.Helper()
	meta, err := checkpoint.ReadMeta(src)
	if err != nil {
		t.Fatal(err)
	}
	s := torch.NewScope(torch.NoGrad)
	defer s.Close()
	all, _, err := s.LoadSafetensors(src, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	edit(s, all, &meta)
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	if err := checkpoint.Write(dst, all, meta); err != nil {
		t.Fatal(err)
	}
}

// When the newest checkpoint cannot be loaded and a resume falls back to
// an older one, pruning keeps the checkpoints the resumed run writes: the
// unreadable one of a later step is neither counted nor kept in their
// place.
func TestPruningKeepsNewCheckpointsBelowAnUnreadableOne(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Steps: 2, BatchSize: 2, CheckpointEvery: 2, KeepCheckpoints: 1, Optimizer: optim.AdamWConfig{LR: 1e-3}}
	first, m1 := newTestTrainer(t, dir, cfg)
	if err := first.Run(context.Background(), &fakeSource{n: 2, shape: [3]int{1, 8, 8}}); err != nil {
		t.Fatal(err)
	}
	first.Close()
	m1.Close()
	// A checkpoint cut short at step 6, as a crash mid-write would leave.
	broken := filepath.Join(dir, checkpoint.Name(6))
	if err := os.WriteFile(broken, []byte("cut short"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg.Steps = 4
	second, m2 := newTestTrainer(t, dir, cfg)
	defer m2.Close()
	defer second.Close()
	if err := second.Resume(broken); err == nil {
		t.Fatal("a broken checkpoint was resumed")
	}
	if err := second.Resume(filepath.Join(dir, checkpoint.Name(2))); err != nil {
		t.Fatal(err)
	}
	if err := second.Run(context.Background(), &fakeSource{n: 2, shape: [3]int{1, 8, 8}}); err != nil {
		t.Fatal(err)
	}
	all, err := checkpoint.List(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 || all[0] != filepath.Join(dir, checkpoint.Name(4)) || all[1] != broken {
		t.Fatalf("checkpoints %v, want the new one of step 4 and the broken one of step 6", all)
	}
	third, m3 := newTestTrainer(t, dir, cfg)
	defer m3.Close()
	defer third.Close()
	if err := third.Resume(all[0]); err != nil || third.Step() != 4 {
		t.Fatalf("resume from the new checkpoint: %v, step %d", err, third.Step())
	}
}

// A checkpoint of weights the same shape but trained for another noise
// schedule or prediction target is refused, naming the difference, and the
// trainer is left as it was.
func TestResumeRefusesAnotherScheduleOrTarget(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Steps: 2, BatchSize: 4, Seed: 9, CheckpointEvery: 2, LogEvery: 2}
	tr, m := newTestTrainer(t, dir, cfg)
	if err := tr.Run(context.Background(), &fakeSource{seed: 1, n: 4, shape: [3]int{1, 8, 8}}); err != nil {
		t.Fatal(err)
	}
	tr.Close()
	m.Close()
	path := filepath.Join(dir, checkpoint.Name(2))
	for _, c := range []struct {
		sched diffusion.ScheduleConfig
		cfg   Config
		want  string
	}{
		{diffusion.ScheduleConfig{T: 100, Kind: diffusion.Cosine}, cfg, "noise schedule"},
		{diffusion.ScheduleConfig{T: 100}, Config{Steps: 2, BatchSize: 4, Seed: 9, Target: diffusion.V}, `trained to predict "epsilon"`},
	} {
		sc := mustSchedule(t, c.sched)
		om := newConvModel(t, sc.T())
		other, err := New(om, sc, c.cfg, torch.CPU, []int64{1, 8, 8})
		if err != nil {
			t.Fatal(err)
		}
		if err := other.Resume(path); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Resume = %v, want an error with %q", err, c.want)
		}
		if other.Step() != 0 {
			t.Errorf("a refused resume moved the trainer to step %d", other.Step())
		}
		other.Close()
		om.Close()
	}
}

// A checkpoint written on another kind of device (here one that says
// "cuda" and holds a CUDA generator's 16-byte state) resumes with the noise
// generator seeded from the run's seed and step, the same at every such
// resume, and says so; one of this kind restores its state.
func TestResumeOnAnotherKindOfDevice(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Steps: 2, BatchSize: 4, Seed: 9, CheckpointEvery: 2, LogEvery: 2}
	tr, m := newTestTrainer(t, dir, cfg)
	if err := tr.Run(context.Background(), &fakeSource{seed: 1, n: 4, shape: [3]int{1, 8, 8}}); err != nil {
		t.Fatal(err)
	}
	wantState, err := tr.gen.State()
	if err != nil {
		t.Fatal(err)
	}
	tr.Close()
	m.Close()
	path := filepath.Join(dir, checkpoint.Name(2))
	if meta, err := checkpoint.ReadMeta(path); err != nil || meta.Extra[checkpoint.KeyRNGDevice] != "cpu" {
		t.Fatalf("the checkpoint records the generator's device as %q (%v), want cpu", meta.Extra[checkpoint.KeyRNGDevice], err)
	}
	resume := func(p string) (reseeded bool, state []byte) {
		t.Helper()
		cfg.Steps = 4
		r, rm := newTestTrainer(t, t.TempDir(), cfg)
		defer rm.Close()
		defer r.Close()
		if err := r.Resume(p); err != nil {
			t.Fatal(err)
		}
		st, err := r.gen.State()
		if err != nil {
			t.Fatal(err)
		}
		return r.Reseeded, st
	}
	if reseeded, st := resume(path); reseeded || !bytes.Equal(st, wantState) {
		t.Errorf("same kind of device: reseeded %v, state restored %v", reseeded, bytes.Equal(st, wantState))
	}

	moved := filepath.Join(t.TempDir(), checkpoint.Name(2))
	rewriteCheckpoint(t, path, moved, func(s *torch.Scope, all map[string]*torch.Tensor, meta *checkpoint.Meta) {
		all[checkpoint.RNGState] = s.FromBytes(make([]byte, 16), torch.Uint8, 16) // a CUDA generator's seed and offset
		meta.Extra[checkpoint.KeyRNGDevice] = "cuda"
	})
	r1, st1 := resume(moved)
	r2, st2 := resume(moved)
	if !r1 || !r2 || !bytes.Equal(st1, st2) || bytes.Equal(st1, wantState) {
		t.Errorf("another kind of device: reseeded %v and %v, the same state both times %v", r1, r2, bytes.Equal(st1, st2))
	}
}
