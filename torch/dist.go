package torch

// #include <stdlib.h>
// #include "ddpm_torch.h"
import "C"

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"
)

// DistAvailable reports whether this build of the shim has distributed
// (c10d/Gloo) support. Without it NewProcessGroup fails, saying how to get it.
func DistAvailable() bool {
	var ok C.int32_t
	C.ddpm_dist_available(&ok)
	return ok != 0
}

// ProcessGroup is this process's membership of a group of cooperating
// processes (ranks) for data-parallel training, over c10d with Gloo. Its
// collectives must be called by every rank in the same order with tensors of
// the same shapes; each fails, rather than hangs, when a peer is gone or does
// not answer within the group's timeout. After one failure the group is
// unusable.
type ProcessGroup struct {
	mu          sync.Mutex
	h           C.ddpm_dist
	rank, world int
}

// NewProcessGroup joins the group of world processes meeting at addr:port
// (rank 0 listens there) as rank. It waits up to timeout for every rank to
// arrive; the same timeout bounds every later collective.
func NewProcessGroup(addr string, port, rank, world int, timeout time.Duration) (*ProcessGroup, error) {
	if timeout <= 0 {
		return nil, &Error{Op: "dist_init", Msg: fmt.Sprintf("timeout %v must be positive", timeout)}
	}
	ca := C.CString(addr)
	defer C.free(unsafe.Pointer(ca))
	var h C.ddpm_dist
	if err := takeError("dist_init", C.ddpm_dist_init(ca, C.int32_t(port), C.int32_t(rank), C.int32_t(world),
		C.double(timeout.Seconds()), &h)); err != nil {
		return nil, err
	}
	return &ProcessGroup{h: h, rank: rank, world: world}, nil
}

// Rank is this process's rank, from 0.
func (g *ProcessGroup) Rank() int { return g.rank }

// World is the number of ranks.
func (g *ProcessGroup) World() int { return g.world }

// Close leaves the group; it is idempotent.
func (g *ProcessGroup) Close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.h != nil {
		C.ddpm_dist_free(g.h)
		g.h = nil
	}
}

func (g *ProcessGroup) handle(op string) (C.ddpm_dist, error) {
	if g == nil || g.h == nil {
		return nil, &Error{Op: op, Msg: "process group is nil or closed"}
	}
	return g.h, nil
}

// AllReduceMean replaces every tensor by its mean over the ranks, in place.
func (g *ProcessGroup) AllReduceMean(ts []*Tensor) error {
	return g.allReduce("all_reduce", ts, C.DDPM_DIST_MEAN)
}

// AllReduceSum replaces every tensor by its sum over the ranks, in place.
func (g *ProcessGroup) AllReduceSum(ts []*Tensor) error {
	return g.allReduce("all_reduce", ts, C.DDPM_DIST_SUM)
}

func (g *ProcessGroup) allReduce(op string, ts []*Tensor, red C.int32_t) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	h, err := g.handle(op)
	if err != nil {
		return err
	}
	hs, err := handles(op, ts)
	if err != nil {
		return err
	}
	e := C.ddpm_dist_allreduce(h, first(hs), C.int64_t(len(hs)), red)
	keepAlive(ts...)
	return takeError(op, e)
}

// GradSync averages the gradients of a set of parameters over the ranks,
// overlapped with backward as PyTorch's DistributedDataParallel does it:
// hooks on the parameters start the all-reduce of each bucket of gradients
// (about a sixteenth of the parameters' bytes, filled from the last
// parameter back, the order backward produces them) while backward still
// runs, and Finish, after backward, waits for them and writes the means
// into the gradients (a parameter without a gradient takes part with
// zeros). Every backward through the parameters must be followed by Finish,
// on every rank.
type GradSync struct {
	mu sync.Mutex
	h  C.ddpm_grad_sync
	g  *ProcessGroup

	buckets, early int
}

// NewGradSync hooks params (leaves that require grad) for gradient
// averaging. The group must outlive the sync.
func (g *ProcessGroup) NewGradSync(params []*Tensor) (*GradSync, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	const op = "grad_sync"
	h, err := g.handle(op)
	if err != nil {
		return nil, err
	}
	hs, err := handles(op, params)
	if err != nil {
		return nil, err
	}
	var out C.ddpm_grad_sync
	e := C.ddpm_dist_grad_sync_new(h, first(hs), C.int64_t(len(hs)), &out)
	keepAlive(params...)
	if err := takeError(op, e); err != nil {
		return nil, err
	}
	return &GradSync{h: out, g: g}, nil
}

// Finish completes the averaging after a backward: the gradients then hold
// their means over the ranks.
func (s *GradSync) Finish() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.h == nil {
		return &Error{Op: "grad_sync_finish", Msg: "gradient sync is closed"}
	}
	s.g.mu.Lock()
	defer s.g.mu.Unlock()
	var buckets, early C.int64_t
	if err := takeError("grad_sync_finish", C.ddpm_dist_grad_sync_finish(s.h, &buckets, &early)); err != nil {
		return err
	}
	s.buckets, s.early = int(buckets), int(early)
	return nil
}

// Overlap reports, for the last Finish, the number of buckets and how many
// of them had started their all-reduce while backward still ran.
func (s *GradSync) Overlap() (buckets, early int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buckets, s.early
}

// Close removes the hooks; it is idempotent.
func (s *GradSync) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.h != nil {
		C.ddpm_dist_grad_sync_free(s.h)
		s.h = nil
	}
}

// Broadcast copies rank root's values of ts into the same tensors of every
// other rank, in place.
func (g *ProcessGroup) Broadcast(ts []*Tensor, root int) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	h, err := g.handle("broadcast")
	if err != nil {
		return err
	}
	hs, err := handles("broadcast", ts)
	if err != nil {
		return err
	}
	e := C.ddpm_dist_broadcast(h, first(hs), C.int64_t(len(hs)), C.int32_t(root))
	keepAlive(ts...)
	return takeError("broadcast", e)
}

// Barrier returns once every rank has called it.
func (g *ProcessGroup) Barrier() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	h, err := g.handle("barrier")
	if err != nil {
		return err
	}
	return takeError("barrier", C.ddpm_dist_barrier(h))
}

// DistConfig is where a process stands in a distributed job, as the
// launchers of PyTorch jobs (torchrun, torch.distributed.launch, Slurm
// wrappers) describe it in the environment.
type DistConfig struct {
	Rank, World, LocalRank int
	Addr                   string // MASTER_ADDR
	Port                   int    // MASTER_PORT
}

// The environment variables of torchrun's launch contract.
var distEnvVars = []string{"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"}

// DistEnv reads torchrun's launch contract from the environment: RANK,
// WORLD_SIZE, MASTER_ADDR and MASTER_PORT (and LOCAL_RANK, which defaults to
// RANK). ok is false, with no error, when none of them is set: a
// single-process run. Some but not all of them set, or a malformed value, is
// an error naming the variable.
func DistEnv() (cfg DistConfig, ok bool, err error) {
	return distEnv(os.LookupEnv)
}

func distEnv(lookup func(string) (string, bool)) (cfg DistConfig, ok bool, err error) {
	var set, missing []string
	vals := map[string]string{}
	for _, k := range distEnvVars {
		if v, found := lookup(k); found && strings.TrimSpace(v) != "" {
			set = append(set, k)
			vals[k] = strings.TrimSpace(v)
		} else if k != "LOCAL_RANK" {
			missing = append(missing, k)
		}
	}
	if len(set) == 0 {
		return cfg, false, nil
	}
	if len(missing) > 0 {
		return cfg, false, fmt.Errorf("distributed launch: %s set but %s missing (a torchrun-style launch sets RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT)",
			strings.Join(set, ", "), strings.Join(missing, ", "))
	}
	num := func(k string, lo, hi int) (int, error) {
		n, err := strconv.Atoi(vals[k])
		if err != nil || n < lo || n > hi {
			return 0, fmt.Errorf("distributed launch: %s=%q is not an integer in [%d, %d]", k, vals[k], lo, hi)
		}
		return n, nil
	}
	if cfg.World, err = num("WORLD_SIZE", 1, 1<<20); err != nil {
		return cfg, false, err
	}
	if cfg.Rank, err = num("RANK", 0, cfg.World-1); err != nil {
		return cfg, false, err
	}
	cfg.LocalRank = cfg.Rank
	if _, has := vals["LOCAL_RANK"]; has {
		if cfg.LocalRank, err = num("LOCAL_RANK", 0, 1<<20); err != nil {
			return cfg, false, err
		}
	}
	if cfg.Port, err = num("MASTER_PORT", 1, 65535); err != nil {
		return cfg, false, err
	}
	cfg.Addr = vals["MASTER_ADDR"]
	return cfg, true, nil
}
