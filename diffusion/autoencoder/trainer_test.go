package autoencoder

import (
	"context"
	"math"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/diffusion/checkpoint"
	"github.com/ddpm-go/ddpm/diffusion/data"
	"github.com/ddpm-go/ddpm/torch"
)

// waves is a dataset of n 1x8x8 images, each a plane wave
// sin(a h + b w + c) with random a, b, c: smooth images an autoencoder
// learns quickly.
func waves(n int, seed uint64) *data.Dataset {
	r := rand.New(rand.NewPCG(seed, 1))
	d := &data.Dataset{N: n, C: 1, H: 8, W: 8, Images: make([]float32, n*64), Source: "waves"}
	for i := range n {
		a, b, c := r.Float64()*1.2, r.Float64()*1.2, r.Float64()*2*math.Pi
		for h := range 8 {
			for w := range 8 {
				d.Images[i*64+h*8+w] = float32(math.Sin(a*float64(h) + b*float64(w) + c))
			}
		}
	}
	return d
}

func trainConfig() TrainConfig {
	return TrainConfig{
		Steps: 60, BatchSize: 8, Loss: Loss{Reconstruction: L1, KLWeight: 1e-3},
		EMADecay: 0.9, GradClip: 1, Seed: 4,
	}
}

// Training lowers the loss and raises the held-out reconstruction PSNR,
// and leaves no tensor behind per step.
func TestTrainerLearns(t *testing.T) {
	m := newTestModel(t, smallConfig(), 2)
	cfg := trainConfig()
	cfg.Optimizer.LR, cfg.Optimizer.WarmupSteps = 3e-3, -1
	held := waves(16, 9)
	before, err := ReconstructionPSNR(m, held, 5)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := NewTrainer(m, waves(64, 1), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	var first, last float64
	var live int64
	for i := range cfg.Steps {
		st, err := tr.Step(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first, live = st.Loss, torch.LiveTensors()
		}
		last = st.Loss
		if d := torch.LiveTensors() - live; d != 0 {
			t.Fatalf("step %d: %d more live tensors than after step 1", i+1, d)
		}
	}
	after, err := ReconstructionPSNR(m, held, 5)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("loss %.4f -> %.4f, held-out PSNR %.2f -> %.2f dB", first, last, before, after)
	if !(last < 0.6*first) || !(after > before+3) {
		t.Errorf("no learning: loss %.4f -> %.4f, PSNR %.2f -> %.2f dB", first, last, before, after)
	}
	if tr.Steps() != cfg.Steps {
		t.Errorf("Steps() = %d, want %d", tr.Steps(), cfg.Steps)
	}
}

// ReconstructionPSNR is the mean over images of 10 log10(4 / MSE_i) of the
// clamped reconstruction from the posterior mean, recomputed here in
// float64 on the host.
func TestReconstructionPSNR(t *testing.T) {
	m := newTestModel(t, smallConfig(), 3)
	d := waves(5, 2)
	got, err := ReconstructionPSNR(m, d, 2) // batches 2, 2, 1
	if err != nil {
		t.Fatal(err)
	}
	s := torch.NewScope(torch.Inference)
	defer s.Close()
	mean, _ := m.Encode(s, s.FromFloat32s(d.Images, 5, 1, 8, 8))
	y, err := m.Decode(s, mean).Float32s()
	if err != nil {
		t.Fatal(err)
	}
	want := 0.0
	for i := range 5 {
		mse := 0.0
		for j := range 64 {
			e := math.Max(-1, math.Min(1, float64(y[i*64+j]))) - float64(d.Images[i*64+j])
			mse += e * e / 64
		}
		want += 10 * math.Log10(4/mse) / 5
	}
	if math.Abs(got-want) > 1e-4 {
		t.Errorf("PSNR = %.6f dB, host float64 %.6f dB", got, want)
	}
	if _, err := ReconstructionPSNR(m, &data.Dataset{C: 1, H: 8, W: 8}, 2); err == nil {
		t.Error("no images: no error")
	}
}

// A run checkpointed at step 3 and resumed gives the weights of the run
// that was not interrupted (to float32 rounding), with the same losses.
func TestResumeContinuesTheRun(t *testing.T) {
	cfg := trainConfig()
	cfg.Steps = 6
	ds := waves(32, 5)
	run := func(tr *Trainer, steps int) []float64 {
		var losses []float64
		for range steps {
			st, err := tr.Step(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			losses = append(losses, st.Loss)
		}
		return losses
	}
	whole := newTestModel(t, smallConfig(), 6)
	tw, err := NewTrainer(whole, ds, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer tw.Close()
	path := filepath.Join(t.TempDir(), checkpoint.Name(3))
	wantLosses := run(tw, 3)
	if err := tw.Save(path); err != nil {
		t.Fatal(err)
	}
	wantLosses = append(wantLosses, run(tw, 3)...)

	resumed := newTestModel(t, smallConfig(), 99) // other initial weights
	tr, err := NewTrainer(resumed, ds, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if err := tr.Resume(path); err != nil {
		t.Fatal(err)
	}
	if tr.Steps() != 3 {
		t.Fatalf("resumed at step %d, want 3", tr.Steps())
	}
	got := run(tr, 3)
	for i, l := range got {
		if math.Abs(l-wantLosses[3+i]) > 1e-5 {
			t.Errorf("step %d: loss %.7f after resuming, %.7f uninterrupted", 4+i, l, wantLosses[3+i])
		}
	}
	s := torch.NewScope(torch.NoGrad)
	defer s.Close()
	for i, p := range whole.Params() {
		d, err := s.Max(s.Abs(s.Sub(p.T, resumed.Params()[i].T)), nil, false).Item()
		if err != nil {
			t.Fatal(err)
		}
		if d > 1e-5 {
			t.Errorf("%s differs by %g after resuming", p.Name, d)
		}
	}
	for i, p := range tw.EMA() {
		if d := maxAbsDiff(t, s, p.T, tr.EMA()[i].T); d > 1e-5 {
			t.Errorf("EMA %s differs by %g after resuming", p.Name, d)
		}
	}

	// What the checkpoint says, and what it refuses.
	meta, err := ReadCheckpointMeta(path)
	if err != nil {
		t.Fatal(err)
	}
	if meta.Step != 3 || meta.EMAUpdates != 3 || !meta.HasEMA || meta.Train != cfg {
		t.Errorf("metadata %+v", meta)
	}
	loaded, _, err := LoadCheckpoint(path, checkpoint.EMA, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	loaded.Close()
	other := cfg
	other.Loss.KLWeight = 1
	t2, err := NewTrainer(newTestModel(t, smallConfig(), 1), ds, other)
	if err != nil {
		t.Fatal(err)
	}
	defer t2.Close()
	if err := t2.Resume(path); err == nil || !strings.Contains(err.Error(), "another configuration") {
		t.Errorf("resume with another kl weight: %v", err)
	}
	wider := smallConfig()
	wider.LatentChannels = 3
	t3, err := NewTrainer(newTestModel(t, wider, 1), ds, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer t3.Close()
	if err := t3.Resume(path); err == nil || !strings.Contains(err.Error(), "another autoencoder configuration") {
		t.Errorf("resume into another model: %v", err)
	}
	if err := tr.Resume(path); err == nil || !strings.Contains(err.Error(), "has not stepped") {
		t.Errorf("resume of a trainer that stepped: %v", err)
	}
}

// An autoencoder checkpoint and a U-Net checkpoint are told apart: each
// loader refuses the other's file, naming what it is.
func TestCheckpointKinds(t *testing.T) {
	dir := t.TempDir()
	m := newTestModel(t, smallConfig(), 1)
	tr, err := NewTrainer(m, waves(16, 1), trainConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	ours := filepath.Join(dir, "ae.safetensors")
	if err := tr.Save(ours); err != nil {
		t.Fatal(err)
	}
	if _, err := checkpoint.ReadMeta(ours); err == nil || !strings.Contains(err.Error(), CheckpointFormat) {
		t.Errorf("the U-Net reader on an autoencoder checkpoint: %v", err)
	}
	s := torch.NewScope(torch.NoGrad)
	defer s.Close()
	theirs := filepath.Join(dir, "unet.safetensors")
	if err := checkpoint.Write(theirs, map[string]*torch.Tensor{"model.w": s.Zeros([]int64{2}, torch.Float32, torch.CPU)}, checkpoint.Meta{Schedule: diffusion.ScheduleConfig{Kind: diffusion.Linear}}); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadCheckpointMeta(theirs); err == nil || !strings.Contains(err.Error(), "is a U-Net checkpoint") {
		t.Errorf("the autoencoder reader on a U-Net checkpoint: %v", err)
	}
	if _, _, err := LoadCheckpoint(theirs, checkpoint.EMA, torch.CPU); err == nil || !strings.Contains(err.Error(), "is a U-Net checkpoint") {
		t.Errorf("LoadCheckpoint on a U-Net checkpoint: %v", err)
	}
	noEMA := trainConfig()
	noEMA.EMADecay = 0
	t2, err := NewTrainer(m, waves(16, 1), noEMA)
	if err != nil {
		t.Fatal(err)
	}
	defer t2.Close()
	plain := filepath.Join(dir, "plain.safetensors")
	if err := t2.Save(plain); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadCheckpoint(plain, checkpoint.EMA, torch.CPU); err == nil || !strings.Contains(err.Error(), "no EMA weights") {
		t.Errorf("EMA weights of a run without EMA: %v", err)
	}
}

func TestTrainerRefusesMismatchedData(t *testing.T) {
	m := newTestModel(t, smallConfig(), 1)
	rgb := &data.Dataset{N: 16, C: 3, H: 8, W: 8, Images: make([]float32, 16*3*64)}
	odd := &data.Dataset{N: 16, C: 1, H: 7, W: 7, Images: make([]float32, 16*49)}
	for _, c := range []struct {
		d    *data.Dataset
		cfg  func(*TrainConfig)
		want string
	}{
		{rgb, func(*TrainConfig) {}, "3 channels, the model takes 1"},
		{odd, func(*TrainConfig) {}, "divisible by 2"},
		{waves(4, 1), func(*TrainConfig) {}, "fewer than a batch"},
		{waves(16, 1), func(c *TrainConfig) { c.Steps = 0 }, "steps must be positive"},
		{waves(16, 1), func(c *TrainConfig) { c.Loss.KLWeight = -1 }, "kl_weight"},
		{waves(16, 1), func(c *TrainConfig) { c.EMADecay = 1 }, "ema_decay"},
	} {
		cfg := trainConfig()
		c.cfg(&cfg)
		tr, err := NewTrainer(m, c.d, cfg)
		if err == nil {
			tr.Close()
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v", c.want, err)
		}
	}
}

// The caller's run settings travel with a checkpoint's training
// configuration, and negative ones are refused naming the field.
func TestTrainConfigRecordsRunSettings(t *testing.T) {
	cfg := trainConfig()
	cfg.Steps = 1
	held := 7
	cfg.CheckpointEvery, cfg.KeepCheckpoints, cfg.HeldOut = 25, 2, &held
	m := newTestModel(t, smallConfig(), 6)
	tr, err := NewTrainer(m, waves(16, 5), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	path := filepath.Join(t.TempDir(), checkpoint.Name(0))
	if err := tr.Save(path); err != nil {
		t.Fatal(err)
	}
	meta, err := ReadCheckpointMeta(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := meta.Train; got.CheckpointEvery != 25 || got.KeepCheckpoints != 2 || got.HeldOut == nil || *got.HeldOut != 7 {
		t.Errorf("stored training configuration %+v", got)
	}
	negative := -1
	for _, c := range []struct {
		set  func(*TrainConfig)
		want string
	}{
		{func(c *TrainConfig) { c.CheckpointEvery = -1 }, "checkpoint_every"},
		{func(c *TrainConfig) { c.KeepCheckpoints = -1 }, "keep_checkpoints"},
		{func(c *TrainConfig) { c.HeldOut = &negative }, "held_out"},
	} {
		bad := trainConfig()
		c.set(&bad)
		if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Validate = %v, want an error naming %s", err, c.want)
		}
	}
}
