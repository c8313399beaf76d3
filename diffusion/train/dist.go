package train

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"time"

	"github.com/ddpm-go/ddpm/diffusion/data"
	"github.com/ddpm-go/ddpm/diffusion/nn"
	"github.com/ddpm-go/ddpm/torch"
)

// Data-parallel training. With Trainer.Dist set, every rank runs the same
// loop on its own batch of BatchSize images, and the step is the step of one
// process on the global batch of BatchSize x world images made of the ranks'
// batches in rank order:
//   - timesteps, label dropout and noise are drawn for the whole global batch
//     on every rank (from the same seeds), and each rank takes its slice, so
//     a rank uses exactly the draws a single process would use for those
//     images;
//   - gradients are averaged over the ranks (bucketed all-reduce started by
//     hooks while backward still runs, torch.GradSync), which for equal
//     batches is the gradient of the global batch's mean loss;
//   - clipping, AdamW and the EMA then run identically on every rank;
//   - the per-sample losses are summed over the ranks, so every rank logs the
//     global batch's loss and the loss-aware sampler's history stays the same
//     everywhere.
// Dropout masks are drawn on each rank from a generator of its own, seeded
// every step from (seed, step, rank), so the ranks' masks differ and a
// resumed run draws the same ones; runs with dropout match a single process
// in distribution, not bit for bit. The ranks stop together (see Run), and
// only rank 0 writes checkpoints.

// distRank is this process's rank and the world size (0, 1 without Dist).
func (tr *Trainer) distRank() (rank, world int) {
	if tr.Dist == nil {
		return 0, 1
	}
	return tr.Dist.Rank(), tr.Dist.World()
}

// writer reports whether this process writes checkpoints.
func (tr *Trainer) writer() bool {
	rank, _ := tr.distRank()
	return rank == 0
}

// syncRanks makes every rank start from rank 0's state: it checks that all
// ranks have the same configuration and data (src) and are at the same step
// (they resumed the same checkpoint, or none), and copies rank 0's weights,
// EMA and optimizer moments to the others. It also hooks the parameters for
// gradient averaging, once.
func (tr *Trainer) syncRanks(src BatchSource) error {
	if tr.Dist == nil {
		return nil
	}
	if err := tr.checkSameConfig(src); err != nil {
		return err
	}
	s := torch.NewScope(torch.NoGrad)
	defer s.Close()
	mine := []int64{tr.step, tr.ema.Updates(), tr.opt.Steps()}
	counters := s.FromInt64s(append([]int64(nil), mine...), 3)
	if err := s.Err(); err != nil {
		return err
	}
	if err := tr.Dist.Broadcast([]*torch.Tensor{counters}, 0); err != nil {
		return fmt.Errorf("train: synchronising ranks: %w", err)
	}
	root, err := counters.Int64s()
	if err != nil {
		return err
	}
	if root[0] != mine[0] || root[1] != mine[1] || root[2] != mine[2] {
		return fmt.Errorf("train: rank %d is at step %d but rank 0 at step %d: every rank must resume the same checkpoint",
			tr.Dist.Rank(), mine[0], root[0])
	}
	ts := append(nn.Tensors(tr.params), nn.Tensors(tr.ema.Params())...)
	state := tr.opt.State()
	keys := make([]string, 0, len(state))
	for k := range state {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		ts = append(ts, state[k])
	}
	if err := tr.Dist.Broadcast(ts, 0); err != nil {
		return fmt.Errorf("train: synchronising ranks: %w", err)
	}
	if tr.gradSync == nil {
		sync, err := tr.Dist.NewGradSync(nn.Tensors(tr.params))
		if err != nil {
			return fmt.Errorf("train: synchronising ranks: %w", err)
		}
		tr.gradSync = sync
	}
	return nil
}

// globalLosses sums the ranks' per-sample losses into the global batch's
// vector (each rank fills its slice), so every rank sees all of them. One
// more element counts the ranks that ask to stop (stop), so that all of them
// learn in the same step whether any did, without a collective of its own.
func (tr *Trainer) globalLosses(local []float64, offset, global int, stop bool) (losses []float64, anyStop bool, err error) {
	if tr.Dist == nil {
		return local, stop, nil
	}
	all := make([]float64, global+1)
	copy(all[offset:], local)
	if stop {
		all[global] = 1
	}
	s := torch.NewScope(torch.NoGrad)
	defer s.Close()
	t := s.FromFloat64s(all, int64(global+1))
	if err := s.Err(); err != nil {
		return nil, false, err
	}
	if err := tr.Dist.AllReduceSum([]*torch.Tensor{t}); err != nil {
		return nil, false, &collectiveError{fmt.Errorf("train: step %d: %w", tr.step+1, err)}
	}
	if all, err = t.Float64s(); err != nil {
		return nil, false, err
	}
	return all[:global], all[global] > 0, nil
}

// dropoutStream tells the PCG stream of the dropout seeds from that of the
// timesteps, which is seeded (Seed, step).
const dropoutStream = 0x6a09e667f3bcc908

// dropoutGenerator returns the generator of this step's dropout masks on
// rank, seeded from (Seed, step, rank). Masks drawn from the noise's
// generator, which is the same on every rank, would be the same for image j
// of every rank's batch; seeded anew every step, this one needs no state in
// the checkpoint for a resumed run to draw what an uninterrupted one would.
func (tr *Trainer) dropoutGenerator(rank int) (*torch.Generator, error) {
	step := rand.New(rand.NewPCG(tr.cfg.Seed^dropoutStream, uint64(tr.step))).Uint64()
	seed := rand.New(rand.NewPCG(step, uint64(rank))).Uint64()
	gen, err := torch.NewGenerator(seed, tr.dev)
	if err != nil {
		return nil, fmt.Errorf("train: dropout generator: %w", err)
	}
	return gen, nil
}

// collectiveError is a collective of a step that failed: a peer is gone or
// did not answer in time.
type collectiveError struct{ err error }

func (e *collectiveError) Error() string { return e.err.Error() }
func (e *collectiveError) Unwrap() error { return e.err }

// saveAfterFailure makes rank 0 write a checkpoint of the last completed
// step when a collective of the step after it failed (a peer died or did
// not answer), and returns err saying where that step is. This is safe:
// every collective of a step comes before the step changes what a
// checkpoint holds (the losses are summed before backward, the gradients
// averaged before the optimizer, the EMA, the loss scale and the loss
// history are updated); only the generator has moved, by the step's noise,
// and its state from before the step is put back. The file is thus the one
// the last completed step would have written, and a resume goes on as if
// the failed step had never started: a lost peer costs at most that step
// rather than everything since the last checkpoint.
func (tr *Trainer) saveAfterFailure(err error) error {
	if tr.Dir == "" || !tr.writer() || tr.genBefore == nil {
		return err
	}
	if serr := tr.gen.SetState(tr.genBefore); serr != nil {
		return errors.Join(err, fmt.Errorf("train: no checkpoint of step %d: %w", tr.step, serr))
	}
	path, cerr := tr.checkpoint()
	if cerr != nil {
		return errors.Join(err, cerr)
	}
	if path == "" { // written for this step already
		path = tr.lastCheckpoint
	}
	return fmt.Errorf("%w; step %d is saved in %s", err, tr.step, path)
}

// CommTime is the time this trainer spent waiting, after backward, for the
// gradient averaging over the ranks (zero without Dist); the part of the
// all-reduce that overlapped backward is not in it.
func (tr *Trainer) CommTime() time.Duration { return tr.commTime }

// GradOverlap reports, for the last step, the number of gradient buckets
// and how many of them started their all-reduce during backward (0, 0
// without Dist).
func (tr *Trainer) GradOverlap() (buckets, early int) {
	if tr.gradSync == nil {
		return 0, 0
	}
	return tr.gradSync.Overlap()
}

// rankConfig is what every rank of a run must agree on: the training
// configuration, the shapes of the parameters (the model) and, for a
// data.Loader, what decides the shards (the dataset and the loader's
// options; the data path may differ between machines).
type rankConfig struct {
	Train  Config             `json:"train"`
	Params map[string][]int64 `json:"params"`
	Data   *data.Fingerprint  `json:"data,omitempty"`
}

// fingerprinted is a batch source that can say what decides its batches
// (data.Loader).
type fingerprinted interface{ Fingerprint() data.Fingerprint }

// checkSameConfig compares every rank's training configuration, model and
// data with rank 0's before any weights move (ranks built for other models
// would otherwise abort inside the collective library, and ranks with other
// data would silently train on overlapping shards). Rank 0's configuration
// is broadcast as JSON; each rank names the fields where it differs; a sum
// over the ranks makes all of them fail together.
func (tr *Trainer) checkSameConfig(src BatchSource) error {
	rc := rankConfig{Train: tr.cfg, Params: map[string][]int64{}}
	for _, p := range tr.params {
		rc.Params[p.Name] = p.T.Shape()
	}
	var shardErr error
	if f, ok := src.(fingerprinted); ok {
		fp := f.Fingerprint()
		rc.Data = &fp
		if rank, world := tr.distRank(); fp.Shard != rank || fp.NumShards != world {
			shardErr = fmt.Errorf("train: rank %d of %d reads shard %d of %d of the data; give every rank the shard of its rank",
				rank, world, fp.Shard, fp.NumShards)
		}
	}
	mine, err := json.Marshal(rc)
	if err != nil {
		return fmt.Errorf("train: %w", err)
	}
	s := torch.NewScope(torch.NoGrad)
	defer s.Close()
	size := s.FromInt64s([]int64{int64(len(mine))}, 1)
	if err := s.Err(); err != nil {
		return fmt.Errorf("train: %w", err)
	}
	if err := tr.Dist.Broadcast([]*torch.Tensor{size}, 0); err != nil {
		return fmt.Errorf("train: comparing the ranks' configurations: %w", err)
	}
	n, err := size.Int64s()
	if err != nil {
		return fmt.Errorf("train: %w", err)
	}
	buf := make([]byte, n[0])
	copy(buf, mine)
	root := s.FromBytes(buf, torch.Uint8, n[0])
	if err := s.Err(); err != nil {
		return fmt.Errorf("train: %w", err)
	}
	if err := tr.Dist.Broadcast([]*torch.Tensor{root}, 0); err != nil {
		return fmt.Errorf("train: comparing the ranks' configurations: %w", err)
	}
	rootJSON, err := root.Bytes()
	if err != nil {
		return fmt.Errorf("train: %w", err)
	}
	diff := configDiff(rootJSON, mine)
	bad := 0.0
	if len(diff) > 0 || shardErr != nil {
		bad = 1
	}
	count := s.FromFloat64s([]float64{bad}, 1)
	if err := s.Err(); err != nil {
		return fmt.Errorf("train: %w", err)
	}
	if err := tr.Dist.AllReduceSum([]*torch.Tensor{count}); err != nil {
		return fmt.Errorf("train: comparing the ranks' configurations: %w", err)
	}
	total, err := count.Item()
	if err != nil {
		return fmt.Errorf("train: %w", err)
	}
	switch {
	case shardErr != nil:
		return shardErr
	case len(diff) > 0:
		return fmt.Errorf("train: rank %d was started with another configuration than rank 0 (differs in %s); start every rank with the same flags",
			tr.Dist.Rank(), strings.Join(diff, ", "))
	case total > 0:
		return fmt.Errorf("train: %g rank(s) were started with another configuration than rank %d; start every rank with the same flags", total, tr.Dist.Rank())
	}
	return nil
}

// configDiff lists the dotted keys where two JSON objects differ ("" when
// one cannot be read, reported as "the configuration").
func configDiff(a, b []byte) []string {
	var x, y map[string]any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		if string(a) != string(b) {
			return []string{"the configuration"}
		}
		return nil
	}
	var out []string
	var walk func(prefix string, x, y map[string]any)
	walk = func(prefix string, x, y map[string]any) {
		keys := map[string]bool{}
		for k := range x {
			keys[k] = true
		}
		for k := range y {
			keys[k] = true
		}
		sorted := make([]string, 0, len(keys))
		for k := range keys {
			sorted = append(sorted, k)
		}
		sort.Strings(sorted)
		for _, k := range sorted {
			xm, xok := x[k].(map[string]any)
			ym, yok := y[k].(map[string]any)
			if xok && yok && prefix == "" && k == "params" {
				if fmt.Sprint(xm) != fmt.Sprint(ym) {
					out = append(out, "the model (parameter shapes)")
				}
				continue
			}
			if xok && yok {
				walk(prefix+k+".", xm, ym)
				continue
			}
			if fmt.Sprint(x[k]) != fmt.Sprint(y[k]) {
				out = append(out, strings.TrimPrefix(prefix, "train.")+k)
			}
		}
	}
	walk("", x, y)
	return out
}
