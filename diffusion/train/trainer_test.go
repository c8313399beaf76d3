package train

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/diffusion/checkpoint"
	"github.com/ddpm-go/ddpm/diffusion/data"
	"github.com/ddpm-go/ddpm/diffusion/nn"
	"github.com/ddpm-go/ddpm/diffusion/optim"
	"github.com/ddpm-go/ddpm/torch"
)

// convModel is a small trainable model for trainer tests: two 3x3
// convolutions with a learned per-timestep bias, and NaN output on request.
type convModel struct {
	w1, w2, tb *torch.Tensor
	nanAt      int // forward call that returns NaN (0 = never)
	calls      int
}

func newConvModel(t *testing.T, T int) *convModel {
	t.Helper()
	s := torch.NewScope(torch.NoGrad)
	defer s.Close()
	g, _ := torch.NewGenerator(42, torch.CPU)
	defer g.Close()
	m := &convModel{
		w1: s.Keep(s.MulScalar(s.Randn([]int64{4, 1, 3, 3}, torch.Float32, torch.CPU, g), 0.3)),
		w2: s.Keep(s.MulScalar(s.Randn([]int64{1, 4, 3, 3}, torch.Float32, torch.CPU, g), 0.3)),
		tb: s.Keep(s.Zeros([]int64{int64(T), 4}, torch.Float32, torch.CPU)),
	}
	for _, p := range m.Params() {
		if err := p.T.SetRequiresGrad(true); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

func (m *convModel) Params() []nn.Param {
	return []nn.Param{{Name: "w1", T: m.w1}, {Name: "w2", T: m.w2}, {Name: "tb", T: m.tb}}
}

func (m *convModel) SetTraining(bool, *torch.Generator) {}

func (m *convModel) Forward(s *torch.Scope, x, t, labels *torch.Tensor) *torch.Tensor {
	m.calls++
	pad := torch.Conv2dOptions{Padding: [2]int64{1, 1}}
	h := s.Conv2d(x, m.w1, nil, pad)
	h = s.SiLU(s.Add(h, s.Reshape(s.IndexSelect(m.tb, 0, t), -1, 4, 1, 1)))
	out := s.Conv2d(h, m.w2, nil, pad)
	if m.calls == m.nanAt {
		out = s.MulScalar(out, math.NaN())
	}
	return out
}

func (m *convModel) Close() { nn.CloseParams(m.Params()) }

// fakeSource yields batches that depend only on (seed, index), like a
// shuffled data loader.
type fakeSource struct {
	seed  uint64
	n     int
	next  int
	shape [3]int
}

func (f *fakeSource) Next(ctx context.Context) (data.Batch, error) {
	if err := ctx.Err(); err != nil {
		return data.Batch{}, err
	}
	rng := rand.New(rand.NewPCG(f.seed, uint64(f.next)))
	img := make([]float32, f.n*f.shape[0]*f.shape[1]*f.shape[2])
	for i := range img {
		img[i] = float32(math.Tanh(rng.NormFloat64()))
	}
	f.next++
	return data.Batch{Images: img, N: f.n, Index: f.next - 1}, nil
}

func (f *fakeSource) Skip(n int) { f.next += n }

func mustSchedule(t *testing.T, cfg diffusion.ScheduleConfig) *diffusion.Schedule {
	t.Helper()
	s, err := diffusion.NewSchedule(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newTestTrainer(t *testing.T, dir string, cfg Config) (*Trainer, *convModel) {
	t.Helper()
	sc := mustSchedule(t, diffusion.ScheduleConfig{T: 100})
	m := newConvModel(t, sc.T())
	tr, err := New(m, sc, cfg, torch.CPU, []int64{1, 8, 8})
	if err != nil {
		t.Fatal(err)
	}
	tr.Dir = dir
	return tr, m
}

func paramValues(t *testing.T, ps []nn.Param) [][]float32 {
	t.Helper()
	var out [][]float32
	for _, p := range ps {
		v, err := p.T.Float32s()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	return out
}

// sameValues fails unless the uninterrupted run's parameters and the
// resumed run's are equal to the bit.
func sameValues(t *testing.T, name string, uninterrupted, resumed []nn.Param) {
	t.Helper()
	a, b := paramValues(t, uninterrupted), paramValues(t, resumed)
	for i := range a {
		for j := range a[i] {
			if a[i][j] != b[i][j] {
				t.Fatalf("%s param %d[%d]: %v uninterrupted, %v resumed", name, i, j, a[i][j], b[i][j])
			}
		}
	}
}

// A run of 2N steps and a run of N steps, resumed from its checkpoint for N
// more, end with identical weights, EMA and optimizer state.
func TestResumeIsExact(t *testing.T) {
	for _, sampling := range []Sampling{Uniform, LossAware} {
		t.Run(string(sampling), func(t *testing.T) {
			cfg := Config{Steps: 20, BatchSize: 4, Seed: 9, CheckpointEvery: 10, LogEvery: 5,
				Sampling: sampling, EMADecay: 0.9, Optimizer: optim.AdamWConfig{LR: 1e-2, WarmupSteps: 3}}
			full, fm := newTestTrainer(t, t.TempDir(), cfg)
			defer fm.Close()
			defer full.Close()
			if err := full.Run(context.Background(), &fakeSource{seed: 1, n: 4, shape: [3]int{1, 8, 8}}); err != nil {
				t.Fatal(err)
			}

			dir := t.TempDir()
			half := cfg
			half.Steps = 10
			first, m1 := newTestTrainer(t, dir, half)
			if err := first.Run(context.Background(), &fakeSource{seed: 1, n: 4, shape: [3]int{1, 8, 8}}); err != nil {
				t.Fatal(err)
			}
			first.Close()
			m1.Close()

			second, m2 := newTestTrainer(t, dir, cfg)
			defer m2.Close()
			defer second.Close()
			ckpt, err := checkpoint.Latest(dir)
			if err != nil {
				t.Fatal(err)
			}
			if err := second.Resume(ckpt); err != nil {
				t.Fatal(err)
			}
			if second.Step() != 10 {
				t.Fatalf("resumed at step %d, want 10", second.Step())
			}
			if err := second.Run(context.Background(), &fakeSource{seed: 1, n: 4, shape: [3]int{1, 8, 8}}); err != nil {
				t.Fatal(err)
			}
			if full.opt.Steps() != second.opt.Steps() || full.EMA().Updates() != second.EMA().Updates() {
				t.Fatalf("optimizer steps %d/%d, EMA updates %d/%d", full.opt.Steps(), second.opt.Steps(), full.EMA().Updates(), second.EMA().Updates())
			}
			sameValues(t, "model", fm.Params(), m2.Params())
			sameValues(t, "ema", full.EMA().Params(), second.EMA().Params())
			sameValues(t, "optimizer", full.opt.Buffers(), second.opt.Buffers())
		})
	}
}

func TestCheckpointsArePrunedAndComplete(t *testing.T) {
	dir := t.TempDir()
	tr, m := newTestTrainer(t, dir, Config{Steps: 12, BatchSize: 2, CheckpointEvery: 3, KeepCheckpoints: 2,
		Optimizer: optim.AdamWConfig{LR: 1e-3}})
	defer m.Close()
	defer tr.Close()
	tr.ClassNames, tr.Data = []string{"a"}, "some/data"
	var logs []Metrics
	tr.OnLog = func(m Metrics) { logs = append(logs, m) }
	if err := tr.Run(context.Background(), &fakeSource{n: 2, shape: [3]int{1, 8, 8}}); err != nil {
		t.Fatal(err)
	}
	all, err := checkpoint.List(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 || filepath.Base(all[0]) != checkpoint.Name(9) || filepath.Base(all[1]) != checkpoint.Name(12) {
		t.Fatalf("checkpoints %v, want steps 9 and 12", all)
	}
	meta, err := checkpoint.ReadMeta(all[1])
	if err != nil {
		t.Fatal(err)
	}
	if meta.Step != 12 || meta.Schedule.T != 100 || meta.Target != diffusion.Epsilon || len(meta.Train) == 0 ||
		meta.Model != nil || !reflect.DeepEqual(meta.ClassNames, []string{"a"}) || meta.Data != "some/data" {
		t.Errorf("metadata %+v", meta)
	}
	var back Config
	if err := json.Unmarshal(meta.Train, &back); err != nil || back != tr.Config() {
		t.Errorf("training configuration %+v (%v), want %+v", back, err, tr.Config())
	}
	if len(logs) == 0 || logs[len(logs)-1].Step != 12 || logs[0].Loss <= 0 {
		t.Errorf("metrics %+v", logs)
	}
	// Weights of another configuration are refused, and nothing is loaded.
	other := []nn.Param{{Name: "w1", T: nil}}
	s := torch.NewScope(torch.NoGrad)
	defer s.Close()
	other[0].T = s.Zeros([]int64{2, 2}, torch.Float32, torch.CPU)
	if err := checkpoint.LoadWeights(all[1], checkpoint.EMA, other); err == nil {
		t.Error("weights of another model were accepted")
	}
	if _, err := checkpoint.ReadMeta(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing checkpoint was read")
	}
}

// A checkpoint that does not fit is refused and leaves the trainer as it
// was: same step, weights and optimizer state.
func TestFailedResumeChangesNothing(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Steps: 3, BatchSize: 2, CheckpointEvery: 3, Sampling: LossAware, Optimizer: optim.AdamWConfig{LR: 1e-2}}
	src, sm := newTestTrainer(t, dir, cfg)
	defer sm.Close()
	defer src.Close()
	if err := src.Run(context.Background(), &fakeSource{n: 2, shape: [3]int{1, 8, 8}}); err != nil {
		t.Fatal(err)
	}
	// The same checkpoint with a generator state no generator takes: the
	// last thing Resume checks before it restores, after the weights, the
	// optimizer state and the resampler fit, so everything before it must
	// stay as it was.
	bad := filepath.Join(t.TempDir(), checkpoint.Name(3))
	rewriteCheckpoint(t, src.LastCheckpoint(), bad, func(s *torch.Scope, all map[string]*torch.Tensor, _ *checkpoint.Meta) {
		all[checkpoint.RNGState] = s.FromBytes([]byte{1, 2, 3}, torch.Uint8, 3)
	})
	tr, m := newTestTrainer(t, t.TempDir(), Config{Steps: 3, BatchSize: 2, Sampling: LossAware})
	defer m.Close()
	defer tr.Close()
	before, emaBefore := paramValues(t, m.Params()), paramValues(t, tr.EMA().Params())
	if err := tr.Resume(bad); err == nil || !strings.Contains(err.Error(), "generator state") {
		t.Fatalf("resume: %v, want a generator state error", err)
	}
	if tr.Step() != 0 || tr.opt.Steps() != 0 || !reflect.DeepEqual(before, paramValues(t, m.Params())) ||
		!reflect.DeepEqual(emaBefore, paramValues(t, tr.EMA().Params())) {
		t.Error("a failed resume changed the trainer")
	}
}

func TestCancelWritesCheckpoint(t *testing.T) {
	dir := t.TempDir()
	tr, m := newTestTrainer(t, dir, Config{Steps: 1000, BatchSize: 2, CheckpointEvery: 500})
	defer m.Close()
	defer tr.Close()
	ctx, cancel := context.WithCancel(context.Background())
	tr.OnLog = func(m Metrics) {
		if m.Step >= 100 {
			cancel()
		}
	}
	err := tr.Run(ctx, &fakeSource{n: 2, shape: [3]int{1, 8, 8}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}
	ckpt, err := checkpoint.Latest(dir)
	if err != nil || checkpoint.StepOf(ckpt) != tr.Step() {
		t.Fatalf("latest checkpoint %q (%v), want step %d", ckpt, err, tr.Step())
	}
}

// Cancelling while a hook runs (a sample grid, an evaluation) stops the
// hook and the run, with a checkpoint, as a cancel between steps does.
func TestCancelDuringHookWritesCheckpoint(t *testing.T) {
	dir := t.TempDir()
	tr, m := newTestTrainer(t, dir, Config{Steps: 100, BatchSize: 2, CheckpointEvery: 50})
	defer m.Close()
	defer tr.Close()
	ctx, cancel := context.WithCancel(context.Background())
	tr.AfterStep = func(step int64, _ string) (map[string]float64, error) {
		if step == 7 {
			cancel() // as Ctrl-C would, while the grid is being sampled
			return nil, fmt.Errorf("sample grid at step %d: %w", step, ctx.Err())
		}
		return nil, nil
	}
	err := tr.Run(ctx, &fakeSource{n: 2, shape: [3]int{1, 8, 8}})
	if !errors.Is(err, context.Canceled) || tr.Step() != 7 {
		t.Fatalf("Run = %v at step %d, want context.Canceled at step 7", err, tr.Step())
	}
	ckpt, err := checkpoint.Latest(dir)
	if err != nil || checkpoint.StepOf(ckpt) != 7 {
		t.Fatalf("latest checkpoint %q (%v), want step 7", ckpt, err)
	}
}

// indexSource is a fakeSource that records the index of every batch it
// yields.
type indexSource struct {
	fakeSource
	seen []int
}

func (s *indexSource) Next(ctx context.Context) (data.Batch, error) {
	b, err := s.fakeSource.Next(ctx)
	if err == nil {
		s.seen = append(s.seen, b.Index)
	}
	return b, err
}

// A second Run on the source of a cancelled one continues it: the batches
// of the steps taken are skipped once, not again. A Resume then makes the
// next Run skip the resumed steps of a fresh source.
func TestRunAgainContinuesTheSource(t *testing.T) {
	tr, m := newTestTrainer(t, t.TempDir(), Config{Steps: 6, BatchSize: 2, CheckpointEvery: 100})
	defer m.Close()
	defer tr.Close()
	src := &indexSource{fakeSource: fakeSource{n: 2, shape: [3]int{1, 8, 8}}}
	ctx, cancel := context.WithCancel(context.Background())
	tr.AfterStep = func(step int64, _ string) (map[string]float64, error) {
		if step == 3 {
			cancel()
		}
		return nil, nil
	}
	if err := tr.Run(ctx, src); !errors.Is(err, context.Canceled) || tr.Step() != 3 {
		t.Fatalf("Run = %v at step %d, want context.Canceled at step 3", err, tr.Step())
	}
	tr.AfterStep = nil
	if err := tr.Run(context.Background(), src); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(src.seen, []int{0, 1, 2, 3, 4, 5}) {
		t.Errorf("batches %v, want 0 to 5 in order", src.seen)
	}

	// The checkpoint the cancel wrote.
	if err := tr.Resume(filepath.Join(tr.Dir, checkpoint.Name(3))); err != nil {
		t.Fatal(err)
	}
	fresh := &indexSource{fakeSource: fakeSource{n: 2, shape: [3]int{1, 8, 8}}}
	if err := tr.Run(context.Background(), fresh); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(fresh.seen, []int{3, 4, 5}) {
		t.Errorf("after a Resume at step 3: batches %v, want 3 to 5", fresh.seen)
	}
}

// An empty held-out set with evaluations on is refused before the first
// step, not found at the first evaluation.
func TestEmptyHeldOutSetIsRefusedAtStart(t *testing.T) {
	tr, m := newTestTrainer(t, t.TempDir(), Config{Steps: 4, BatchSize: 2, EvalEvery: 2})
	defer m.Close()
	defer tr.Close()
	tr.Held = &data.Dataset{C: 1, H: 8, W: 8}
	src := &indexSource{fakeSource: fakeSource{n: 2, shape: [3]int{1, 8, 8}}}
	err := tr.Run(context.Background(), src)
	if err == nil || !strings.Contains(err.Error(), "held-out images") || tr.Step() != 0 || len(src.seen) != 0 {
		t.Fatalf("Run = %v after %d steps and %d batches, want a held-out set error before any", err, tr.Step(), len(src.seen))
	}
}

func TestNonFiniteLossStops(t *testing.T) {
	dir := t.TempDir()
	tr, m := newTestTrainer(t, dir, Config{Steps: 20, BatchSize: 2, CheckpointEvery: 5})
	defer m.Close()
	defer tr.Close()
	m.nanAt = 8
	before := paramValues(t, m.Params())
	_ = before
	err := tr.Run(context.Background(), &fakeSource{n: 2, shape: [3]int{1, 8, 8}})
	var nf *NonFiniteLossError
	if !errors.As(err, &nf) || nf.Step != 8 || filepath.Base(nf.Checkpoint) != checkpoint.Name(5) {
		t.Fatalf("Run = %v, want a NaN loss at step 8 with checkpoint 5", err)
	}
	if tr.Step() != 7 {
		t.Errorf("step %d after the failure, want 7 (the NaN step is not applied)", tr.Step())
	}
	for _, p := range paramValues(t, m.Params()) {
		for _, v := range p {
			if math.IsNaN(float64(v)) {
				t.Fatal("NaN reached the weights")
			}
		}
	}
	if _, err := os.Stat(filepath.Join(dir, checkpoint.Name(5))); err != nil {
		t.Errorf("last good checkpoint: %v", err)
	}
}

func TestTrainingLeaksNoTensors(t *testing.T) {
	tr, m := newTestTrainer(t, "", Config{Steps: 5, BatchSize: 2, Sampling: LossAware, MinSNRGamma: 5})
	src := &fakeSource{n: 2, shape: [3]int{1, 8, 8}}
	if err := tr.Run(context.Background(), src); err != nil {
		t.Fatal(err)
	}
	live := torch.LiveTensors()
	tr.cfg.Steps = 105
	if err := tr.Run(context.Background(), src); err != nil {
		t.Fatal(err)
	}
	if got := torch.LiveTensors(); got != live {
		t.Errorf("live tensors %d after 100 more steps, want %d", got, live)
	}
	tr.Close()
	m.Close()
}

// After its first steps a training loop takes no new memory from the
// system: every CPU tensor block it frees comes back for the same tensor of
// the next step (torch's caching allocator; activations here are 128 KiB).
func TestTrainingStepsReuseMemory(t *testing.T) {
	tr, m := newTestTrainer(t, "", Config{Steps: 3, BatchSize: 128})
	defer m.Close()
	defer tr.Close()
	src := &fakeSource{n: 128, shape: [3]int{1, 8, 8}}
	if err := tr.Run(context.Background(), src); err != nil {
		t.Fatal(err)
	}
	before, err := torch.CPUCache()
	if err != nil {
		t.Fatal(err)
	}
	tr.cfg.Steps = 23
	if err := tr.Run(context.Background(), src); err != nil {
		t.Fatal(err)
	}
	after, err := torch.CPUCache()
	if err != nil {
		t.Fatal(err)
	}
	if after.Hits-before.Hits < 20 {
		t.Errorf("%d cache hits in 20 steps: the loop's blocks are not cached", after.Hits-before.Hits)
	}
	if after.Misses != before.Misses {
		t.Errorf("%d allocations in 20 steps took new memory, want 0", after.Misses-before.Misses)
	}
}

// The loss-aware weights keep the objective unbiased: Σ_t p_t w_t L_t equals
// the uniform mean of L_t.
func TestLossAwareWeightsAreUnbiased(t *testing.T) {
	h := newLossHistory(50)
	rng := rand.New(rand.NewPCG(1, 2))
	loss := func(t int64) float64 { return 1 + float64(t)*0.1 }
	for range 2000 {
		ts, _ := h.draw(rng, 8)
		ls := make([]float64, len(ts))
		for i, t := range ts {
			ls[i] = loss(t) * (0.5 + rng.Float64())
		}
		h.record(ts, ls)
	}
	if !h.warm() {
		t.Fatal("history never filled")
	}
	p := h.weights()
	var weighted, uniform, sum float64
	for tt := range p {
		w := 1 / (float64(h.T) * p[tt])
		weighted += p[tt] * w * loss(int64(tt))
		uniform += loss(int64(tt)) / float64(h.T)
		sum += p[tt]
	}
	if math.Abs(sum-1) > 1e-12 || math.Abs(weighted-uniform) > 1e-12 {
		t.Errorf("Σp = %g, weighted %g, uniform %g", sum, weighted, uniform)
	}
	if p[49] <= p[0] {
		t.Errorf("higher-loss timesteps are not drawn more often: p0 %g, p49 %g", p[0], p[49])
	}
}

func TestMinSNRWeights(t *testing.T) {
	sc := mustSchedule(t, diffusion.ScheduleConfig{})
	tr := &Trainer{sched: sc, cfg: Config{MinSNRGamma: 5}}
	for _, target := range []diffusion.Target{diffusion.Epsilon, diffusion.X0, diffusion.V} {
		tr.cfg.Target = target
		w := tr.lossWeights([]int64{0, 999}, []float64{1, 2})
		for i, ts := range []int{0, 999} {
			snr := sc.SNR()[ts]
			want := map[diffusion.Target]float64{diffusion.Epsilon: math.Min(snr, 5) / snr, diffusion.X0: math.Min(snr, 5), diffusion.V: math.Min(snr, 5) / (snr + 1)}[target] * float64(i+1)
			if math.Abs(float64(w[i])-want) > 1e-6*math.Max(1, want) {
				t.Errorf("%s t=%d: weight %g, want %g", target, ts, w[i], want)
			}
		}
	}
}

// Two runs from the same seed give bit-identical weights. This guards the
// shim's per-thread OpenMP settings: with them unsynchronised, kernels ran
// with different thread counts depending on which OS thread Go used, and
// sums came out in different orders.
func TestTrainingIsDeterministic(t *testing.T) {
	cfg := Config{Steps: 30, BatchSize: 4, Seed: 9, LogEvery: 10, Optimizer: optim.AdamWConfig{LR: 1e-2}}
	var runs [][][]float32
	for range 3 {
		tr, m := newTestTrainer(t, "", cfg)
		if err := tr.Run(context.Background(), &fakeSource{seed: 1, n: 4, shape: [3]int{1, 8, 8}}); err != nil {
			t.Fatal(err)
		}
		runs = append(runs, paramValues(t, m.Params()))
		tr.Close()
		m.Close()
	}
	for r := 1; r < len(runs); r++ {
		for i := range runs[0] {
			for j := range runs[0][i] {
				if runs[0][i][j] != runs[r][i][j] {
					t.Fatalf("run %d param %d[%d] = %v, run 0 has %v", r, i, j, runs[r][i][j], runs[0][i][j])
				}
			}
		}
	}
}

// bfloat16 autocast trains on the CPU: the loss stays finite and falls.
func TestBFloat16Training(t *testing.T) {
	tr, m := newTestTrainer(t, "", Config{Steps: 60, BatchSize: 4, Precision: "bf16", LogEvery: 20,
		Optimizer: optim.AdamWConfig{LR: 1e-2}})
	defer m.Close()
	defer tr.Close()
	var losses []float64
	tr.OnLog = func(m Metrics) { losses = append(losses, m.Loss) }
	if err := tr.Run(context.Background(), &fakeSource{n: 4, shape: [3]int{1, 8, 8}}); err != nil {
		t.Fatal(err)
	}
	if len(losses) != 3 || !(losses[2] < losses[0]) || math.IsNaN(losses[2]) {
		t.Fatalf("bf16 losses %v", losses)
	}
	if m.w1.DType() != torch.Float32 {
		t.Errorf("weights became %s", m.w1.DType())
	}
	sc := mustSchedule(t, diffusion.ScheduleConfig{T: 100})
	if _, err := New(m, sc, Config{Precision: "fp16"}, torch.CPU, []int64{1, 8, 8}); err == nil {
		t.Error("fp16 on the CPU accepted")
	}
	if _, err := New(m, sc, Config{Precision: "fp8"}, torch.CPU, []int64{1, 8, 8}); err == nil {
		t.Error("unknown precision accepted")
	}
}

func TestLossScaler(t *testing.T) {
	l := newLossScaler()
	if !l.update(3) || l.scale != initialLossScale {
		t.Fatal("a finite step changed the scale")
	}
	if l.update(math.Inf(1)) || l.scale != initialLossScale/2 || l.goodSteps != 0 {
		t.Fatalf("overflow: scale %g", l.scale)
	}
	for range growthInterval {
		l.update(1)
	}
	if l.scale != initialLossScale {
		t.Errorf("scale %g after %d good steps, want %d", l.scale, growthInterval, initialLossScale)
	}
}

func TestConfigDiff(t *testing.T) {
	a := []byte(`{"train":{"steps":10,"optimizer":{"lr":0.001}},"params":{"w":[2,2]}}`)
	b := []byte(`{"train":{"steps":10,"optimizer":{"lr":0.002}},"params":{"w":[2,3]}}`)
	if got := fmt.Sprint(configDiff(a, b)); got != "[the model (parameter shapes) optimizer.lr]" {
		t.Errorf("configDiff = %s", got)
	}
	if d := configDiff(a, a); d != nil {
		t.Errorf("configDiff of equal configs = %v", d)
	}
}

// Latest gives the last step's loss and the images per second from the
// first step on, long before the first metrics record; the first record's
// loss averages the steps Latest saw.
func TestLatestFromTheFirstStep(t *testing.T) {
	tr, m := newTestTrainer(t, "", Config{Steps: 4, BatchSize: 3, LogEvery: 4})
	defer m.Close()
	defer tr.Close()
	if loss, rate := tr.Latest(); loss != 0 || rate != 0 {
		t.Errorf("before any step: Latest = %g, %g", loss, rate)
	}
	var losses []float64
	tr.AfterStep = func(step int64, _ string) (map[string]float64, error) {
		loss, rate := tr.Latest()
		if !(loss > 0) || !(rate > 0) {
			t.Errorf("step %d: Latest = %g, %g img/s", step, loss, rate)
		}
		losses = append(losses, loss)
		return nil, nil
	}
	var logged []Metrics
	tr.OnLog = func(m Metrics) { logged = append(logged, m) }
	if err := tr.Run(context.Background(), &fakeSource{n: 3, shape: [3]int{1, 8, 8}}); err != nil {
		t.Fatal(err)
	}
	mean := (losses[0] + losses[1] + losses[2] + losses[3]) / 4
	if len(logged) != 1 || math.Abs(logged[0].Loss-mean) > 1e-12*mean {
		t.Errorf("records %+v; want one of loss %g", logged, mean)
	}
}

// labelSource yields batches of n noise images with the given labels.
type labelSource struct {
	fakeSource
	labels []int64
}

func (l *labelSource) Next(ctx context.Context) (data.Batch, error) {
	b, err := l.fakeSource.Next(ctx)
	b.Labels = l.labels
	return b, err
}

// A label outside the model's classes is an error of the step naming it,
// checked on the host (on CUDA the model's lookup would be a device-side
// assert that leaves the process without its GPU).
func TestLabelsOutOfRange(t *testing.T) {
	cfg := Config{Steps: 1, BatchSize: 2, NumClasses: 3}
	tr, m := newTestTrainer(t, "", cfg)
	defer m.Close()
	defer tr.Close()
	src := &labelSource{fakeSource{n: 2, shape: [3]int{1, 8, 8}}, []int64{1, 3}}
	if err := tr.Run(context.Background(), src); err == nil || !strings.Contains(err.Error(), "image 1 has label 3, outside [0, 3)") {
		t.Errorf("Run = %v, want the label named", err)
	}
}
