package train_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
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

// probed is the U-Net recording, at every training forward, its output for
// one fixed input twice: without dropout and with the dropout generator the
// trainer handed it. The first shows the ranks' weights agree, the second
// whether their dropout masks do.
type probed struct {
	*unet.UNet
	train  bool
	gen    *torch.Generator
	probes [][2][]float32
}

func (p *probed) SetTraining(train bool, gen *torch.Generator) {
	p.train, p.gen = train, gen
	p.UNet.SetTraining(train, gen)
}

func (p *probed) Forward(s *torch.Scope, x, t, labels *torch.Tensor) *torch.Tensor {
	if p.train {
		var pair [2][]float32
		for i, train := range []bool{false, true} {
			ps := torch.NewScope(torch.NoGrad)
			in := make([]float32, 16*16)
			for j := range in {
				in[j] = float32(math.Sin(float64(j)))
			}
			p.UNet.SetTraining(train, p.gen)
			out := p.UNet.Forward(ps, ps.FromFloat32s(in, 1, 1, 16, 16), ps.FromInt64s([]int64{50}, 1), nil)
			pair[i], _ = out.Float32s()
			ps.Close()
		}
		p.probes = append(p.probes, pair)
	}
	return p.UNet.Forward(s, x, t, labels)
}

// stopResult is what a rank of TestDistHelperStop reports.
type stopResult struct {
	Err      string
	Canceled bool
	Step     int64
	Probes   [][2][]float32
}

// noiseImages is a dataset of n images of 1x16x16 that depend on seed only.
func noiseImages(n int, seed uint64) *data.Dataset {
	rng := rand.New(rand.NewPCG(seed, 0))
	d := &data.Dataset{N: n, C: 1, H: 16, W: 16, Images: make([]float32, n*256), Source: "noise"}
	for i := range d.Images {
		d.Images[i] = float32(math.Tanh(rng.NormFloat64()))
	}
	return d
}

// TestDistHelperStop is one rank of the tests below: the tiny U-Net with
// dropout on its shard of a 13-image dataset, in the scenario DIST_SCENARIO:
//   - cancel: rank 1's context is cancelled in its hook after step 2
//     (which returns the context's error, as an interrupted sample grid
//     does), rank 0's after step 3;
//   - vanish: rank 1 exits after step 3 without a word;
//   - data: rank 1 flips its images and has one image more;
//   - shard: both ranks read shard 0.
func TestDistHelperStop(t *testing.T) {
	env, pg := joinRankGroup(t)
	defer pg.Close()
	scenario, out := os.Getenv("DIST_SCENARIO"), os.Getenv("DIST_OUT")

	cfg, err := unet.Preset("tiny")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Dropout = 0.3
	gen, err := torch.NewGenerator(42, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer gen.Close()
	u, err := unet.NewForTraining(cfg, torch.CPU, torch.Float32, gen)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	// The layers after dropout start at zero (so the output ignores the
	// masks for the first steps): give them weights.
	ps := torch.NewScope(torch.NoGrad)
	for _, p := range u.Params() {
		if v, err := p.T.Float32s(); err == nil && !slices.ContainsFunc(v, func(x float32) bool { return x != 0 }) {
			ps.CopyInPlace(p.T, ps.MulScalar(ps.Randn(p.T.Shape(), torch.Float32, torch.CPU, gen), 0.05))
		}
	}
	if err := ps.Err(); err != nil {
		t.Fatal(err)
	}
	ps.Close()
	model := &probed{UNet: u}
	sc := diffusion.DefaultScheduleConfig()
	sc.T = 100
	sched, err := diffusion.NewSchedule(sc)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := train.New(model, sched, train.Config{Steps: 6, BatchSize: 2, Seed: 7,
		Optimizer: optim.AdamWConfig{LR: 1e-4}, EMADecay: 0.9, CheckpointEvery: 100}, torch.CPU, []int64{1, 16, 16})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	tr.Dist, tr.Dir = pg, filepath.Join(out, fmt.Sprintf("run-%d", env.Rank))

	d, flip := noiseImages(13, 3), false
	if scenario == "data" && env.Rank == 1 {
		d, flip = noiseImages(14, 3), true
	}
	shard := env.Rank
	if scenario == "shard" {
		shard = 0
	}
	loader, err := data.NewLoader(d, data.LoaderOptions{BatchSize: 2, Seed: 7, Shuffle: true, FlipHorizontal: flip,
		DropLast: true, Shard: shard, NumShards: env.World})
	if err != nil {
		t.Fatal(err)
	}
	defer loader.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tr.AfterStep = func(step int64, _ string) (map[string]float64, error) {
		switch {
		case scenario == "cancel" && step == map[int]int64{0: 3, 1: 2}[env.Rank]:
			cancel()
			return nil, ctx.Err()
		case scenario == "vanish" && env.Rank == 1 && step == 3:
			// Long enough for rank 0 to finish step 3 and block in step 4.
			time.Sleep(500 * time.Millisecond)
			os.Exit(0)
		}
		return nil, nil
	}
	err = tr.Run(ctx, loader)
	r := stopResult{Canceled: errors.Is(err, context.Canceled), Step: tr.Step(), Probes: model.probes}
	if err != nil {
		r.Err = err.Error()
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(out, fmt.Sprintf("result-%d.json", env.Rank)), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// startStop starts the two ranks of scenario, writing under dir/scenario.
func startStop(ctx context.Context, t *testing.T, dir, scenario string) []*disttest.Rank {
	out := filepath.Join(dir, scenario)
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	return disttest.Start(ctx, t, 2, "TestDistHelperStop", func(int) []string {
		return []string{"DIST_SCENARIO=" + scenario, "DIST_OUT=" + out}
	})
}

// stopResults waits for the ranks of scenario and returns their results.
func stopResults(t *testing.T, ranks []*disttest.Rank, dir, scenario string) [2]stopResult {
	out := filepath.Join(dir, scenario)
	disttest.Wait(t, ranks)
	var res [2]stopResult
	for r := range 2 {
		if scenario == "vanish" && r == 1 {
			continue
		}
		b, err := os.ReadFile(filepath.Join(out, fmt.Sprintf("result-%d.json", r)))
		if err == nil {
			err = json.Unmarshal(b, &res[r])
		}
		if err != nil {
			t.Fatalf("%s: rank %d: %v\n%s", scenario, r, err, disttest.Describe(ranks))
		}
	}
	return res
}

// checkpointTensors reads every tensor of the checkpoint of step in dir.
func checkpointTensors(t *testing.T, s *torch.Scope, dir string, step int64) map[string][]byte {
	t.Helper()
	all, _, err := s.LoadSafetensors(filepath.Join(dir, checkpoint.Name(step)), torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for k, v := range all {
		if out[k], err = v.Bytes(); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// Ranks stopped at slightly different times stop after the same step, and
// rank 0 saves it; a rank that vanishes costs rank 0 no more than the step
// in flight; and the ranks draw different dropout masks. (Rank 1 stopping
// first used to leave rank 0 in a collective that failed, without a
// checkpoint; a failed collective lost everything since the last
// checkpoint; every rank drew the same masks.)
func TestDistStopTogether(t *testing.T) {
	if !torch.DistAvailable() {
		t.Skip("this build has no distributed support (install libgloo-dev and rebuild the shim)")
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	vanishing, cancelling := startStop(ctx, t, dir, "vanish"), startStop(ctx, t, dir, "cancel")
	cancelled := stopResults(t, cancelling, dir, "cancel")
	vanished := stopResults(t, vanishing, dir, "vanish")
	if t.Failed() {
		return
	}

	t.Run("cancelled", func(t *testing.T) {
		for r, res := range cancelled {
			if !res.Canceled || res.Step != 3 {
				t.Errorf("rank %d stopped at step %d with %q, want step 3 and an error wrapping context.Canceled", r, res.Step, res.Err)
			}
		}
		if c, _ := checkpoint.List(filepath.Join(dir, "cancel", "run-0")); len(c) != 1 || checkpoint.StepOf(c[0]) != 3 {
			t.Errorf("rank 0 wrote %v, want the checkpoint of step 3", c)
		}
	})

	t.Run("vanished", func(t *testing.T) {
		res := vanished[0]
		if res.Canceled || res.Step != 3 || !strings.Contains(res.Err, "step 3 is saved in") {
			t.Fatalf("rank 0 ended at step %d with %q, want a failed collective and step 3 saved", res.Step, res.Err)
		}
		// The checkpoint after the failure is the one step 3 writes when
		// nothing fails: the weights, the optimizer and the generator.
		s := torch.NewScope(torch.NoGrad)
		defer s.Close()
		want := checkpointTensors(t, s, filepath.Join(dir, "cancel", "run-0"), 3)
		got := checkpointTensors(t, s, filepath.Join(dir, "vanish", "run-0"), 3)
		if len(got) != len(want) {
			t.Fatalf("%d tensors after the failure, %d after a clean stop", len(got), len(want))
		}
		for k, w := range want {
			if !bytes.Equal(got[k], w) {
				t.Errorf("%s differs from the clean stop's checkpoint of the same step", k)
			}
		}
	})

	t.Run("dropout", func(t *testing.T) {
		a, b := cancelled[0].Probes, cancelled[1].Probes
		if len(a) != 3 || len(b) != 3 {
			t.Fatalf("%d and %d probes, want 3 (one a step)", len(a), len(b))
		}
		for i := range a {
			if !slices.Equal(a[i][0], b[i][0]) {
				t.Errorf("step %d: the ranks' outputs without dropout differ: the weights are not the same", i+1)
			}
			if slices.Equal(a[i][1], b[i][1]) {
				t.Errorf("step %d: the ranks drew the same dropout masks", i+1)
			}
		}
	})
}

// Ranks with other data (size, flips) or shards fail together before
// training, in one line naming what differs: their shards used to overlap
// silently.
func TestDistRanksWithOtherDataFail(t *testing.T) {
	if !torch.DistAvailable() {
		t.Skip("this build has no distributed support (install libgloo-dev and rebuild the shim)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	other, same := startStop(ctx, t, dir, "data"), startStop(ctx, t, dir, "shard")
	for _, tc := range []struct {
		scenario string
		ranks    []*disttest.Rank
		want     [2]string
	}{
		{"data", other, [2]string{"1 rank(s) were started with another configuration than rank 0",
			"rank 1 was started with another configuration than rank 0 (differs in data.contents, data.flip, data.images)"}},
		{"shard", same, [2]string{"1 rank(s) were started with another configuration than rank 0",
			"rank 1 of 2 reads shard 0 of 2 of the data; give every rank the shard of its rank"}},
	} {
		res := stopResults(t, tc.ranks, dir, tc.scenario)
		for r, want := range tc.want {
			if !strings.Contains(res[r].Err, want) || res[r].Step != 0 || strings.Contains(res[r].Err, "\n") {
				t.Errorf("%s: rank %d: step %d, error %q, want one line with %q", tc.scenario, r, res[r].Step, res[r].Err, want)
			}
		}
	}
}
