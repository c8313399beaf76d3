package train_test

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/diffusion/checkpoint"
	"github.com/ddpm-go/ddpm/diffusion/data"
	"github.com/ddpm-go/ddpm/diffusion/optim"
	"github.com/ddpm-go/ddpm/diffusion/train"
	"github.com/ddpm-go/ddpm/diffusion/unet"
	"github.com/ddpm-go/ddpm/internal/disttest"
	"github.com/ddpm-go/ddpm/torch"
)

// globalSource yields global batches of n images that depend only on
// (seed, index); a rank of world takes the slice [rank*n/world, (rank+1)*n/world)
// of each, so the ranks' batches together are the single process's batch.
type globalSource struct {
	seed           uint64
	n, rank, world int
	next, size     int
}

func (g *globalSource) Next(ctx context.Context) (data.Batch, error) {
	rng := rand.New(rand.NewPCG(g.seed, uint64(g.next)))
	g.next++
	per := g.size * g.size
	all := make([]float32, g.n*per)
	for i := range all {
		all[i] = float32(math.Tanh(rng.NormFloat64()))
	}
	b := g.n / g.world
	return data.Batch{Images: all[g.rank*b*per : (g.rank+1)*b*per], N: b, Index: g.next - 1}, nil
}

func (g *globalSource) Skip(n int) { g.next += n }

const distSteps = 5

// distTrain trains the tiny U-Net (no dropout) for distSteps steps on
// global batches of 2*perRank images, as one rank of pg (nil: alone on the
// whole global batch), and returns the trainer and model.
func distTrain(t *testing.T, pg *torch.ProcessGroup, perRank int, initSeed uint64, dir string) (*train.Trainer, *unet.UNet) {
	t.Helper()
	cfg, err := unet.Preset("tiny")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Dropout = 0
	gen, err := torch.NewGenerator(initSeed, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer gen.Close()
	model, err := unet.NewForTraining(cfg, torch.CPU, torch.Float32, gen)
	if err != nil {
		t.Fatal(err)
	}
	sc := diffusion.DefaultScheduleConfig()
	sc.T = 100
	sched, err := diffusion.NewSchedule(sc)
	if err != nil {
		t.Fatal(err)
	}
	rank, world := 0, 1
	if pg != nil {
		rank, world = pg.Rank(), pg.World()
	}
	tc := train.Config{Steps: distSteps, BatchSize: 2 * perRank / world, Seed: 7,
		Optimizer: optim.AdamWConfig{LR: 1e-4}, EMADecay: 0.9, CheckpointEvery: 100}
	tr, err := train.New(model, sched, tc, torch.CPU, []int64{1, 16, 16})
	if err != nil {
		t.Fatal(err)
	}
	tr.Dist = pg
	tr.Dir = dir
	src := &globalSource{seed: 11, n: 2 * perRank, rank: rank, world: world, size: 16}
	if err := tr.Run(context.Background(), src); err != nil {
		t.Fatal(err)
	}
	return tr, model
}

func weights(tr *train.Trainer, m *unet.UNet) map[string]*torch.Tensor {
	out := map[string]*torch.Tensor{}
	for _, p := range m.Params() {
		out["model."+p.Name] = p.T
	}
	for _, p := range tr.EMA().Params() {
		out["ema."+p.Name] = p.T
	}
	return out
}

// joinRankGroup joins the process group of a test started as a rank of a
// distributed test, and skips the test otherwise.
func joinRankGroup(t *testing.T) (torch.DistConfig, *torch.ProcessGroup) {
	t.Helper()
	if !disttest.IsRank() {
		t.Skip("started only as a rank of a distributed test")
	}
	env, ok, err := torch.DistEnv()
	if !ok || err != nil {
		t.Fatalf("launch environment: %v %v", ok, err)
	}
	pg, err := torch.NewProcessGroup(env.Addr, env.Port, env.Rank, env.World, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return env, pg
}

// TestDistHelperTrain is one rank of TestDistTrainingMatchesOneProcess.
func TestDistHelperTrain(t *testing.T) {
	cfg, pg := joinRankGroup(t)
	defer pg.Close()
	b, _ := strconv.Atoi(os.Getenv("DIST_BATCH"))
	out := os.Getenv("DIST_OUT")
	// Different initial weights on every rank: training must start from
	// rank 0's.
	tr, m := distTrain(t, pg, b, 42+uint64(cfg.Rank), filepath.Join(out, fmt.Sprintf("run-%d", cfg.Rank)))
	defer m.Close()
	defer tr.Close()
	if err := torch.SaveSafetensors(filepath.Join(out, fmt.Sprintf("rank-%d.safetensors", cfg.Rank)), weights(tr, m), nil); err != nil {
		t.Fatal(err)
	}
	buckets, early := tr.GradOverlap()
	fmt.Printf("rank %d: trained %d steps, %v waiting for the gradient all-reduce, %d of %d buckets started during backward\n",
		cfg.Rank, tr.Step(), tr.CommTime(), early, buckets)
	if buckets < 2 || early == 0 {
		t.Errorf("%d of %d gradient buckets started during backward: no overlap", early, buckets)
	}
}

func TestDistTrainingMatchesOneProcess(t *testing.T) {
	if !torch.DistAvailable() {
		t.Skip("this build has no distributed support (install libgloo-dev and rebuild the shim)")
	}
	const perRank = 3
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ranks := disttest.Start(ctx, t, 2, "TestDistHelperTrain", func(int) []string {
		return []string{"DIST_BATCH=" + strconv.Itoa(perRank), "DIST_OUT=" + dir}
	})
	// Meanwhile, one process on the global batch of 2*perRank.
	tr, m := distTrain(t, nil, perRank, 42, "")
	defer m.Close()
	defer tr.Close()
	disttest.Wait(t, ranks)
	if t.Failed() {
		return
	}
	want := weights(tr, m)
	s := torch.NewScope(torch.NoGrad)
	defer s.Close()
	for r := range 2 {
		got, _, err := s.LoadSafetensors(filepath.Join(dir, fmt.Sprintf("rank-%d.safetensors", r)), torch.CPU)
		if err != nil {
			t.Fatal(err)
		}
		worst, where := 0.0, ""
		for k, w := range want {
			a, err1 := w.Float32s()
			b, err2 := got[k].Float32s()
			if err1 != nil || err2 != nil || len(a) != len(b) {
				t.Fatalf("%s: %v %v", k, err1, err2)
			}
			for i := range a {
				if d := math.Abs(float64(a[i] - b[i])); d > worst {
					worst, where = d, k
				}
			}
		}
		t.Logf("rank %d: largest difference from one process: %.3g (%s)", r, worst, where)
		// Float32 sums in another order move the weights by about 1e-8 here
		// (AdamW normalises tiny gradient differences); a wrong slice of the
		// draws or a missing average moves them by about the learning rate.
		if worst > 1e-5 {
			t.Errorf("rank %d ends %.3g away from one process (%s)", r, worst, where)
		}
	}
	// Only rank 0 wrote a checkpoint.
	if c, _ := checkpoint.List(filepath.Join(dir, "run-0")); len(c) != 1 {
		t.Errorf("rank 0 wrote %v", c)
	}
	if c, _ := checkpoint.List(filepath.Join(dir, "run-1")); len(c) != 0 {
		t.Errorf("rank 1 wrote %v", c)
	}
}
