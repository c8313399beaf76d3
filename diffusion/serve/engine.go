// Package serve runs a sampling service inside a Go program: an Engine
// batches the denoising steps of many concurrent requests into shared model
// forwards (step-level batching).
//
// A U-Net step takes one timestep per sample, so requests at different
// steps, with different samplers (DDPM, DDIM with any η, DPM-Solver++),
// step counts and guidance weights, can share one forward. A scheduler
// goroutine (a worker) owns all torch work of its requests: it admits waiting
// requests as slots (one per image, two rows under classifier-free
// guidance), runs one forward over every active slot, splits the output per
// request, combines guidance per request and advances each request with its
// own sampler state and its own generator, then retires finished requests.
// New requests join at the next iteration. Options.Workers such goroutines
// (one by default) share the model's weights, each with its own requests,
// and their forwards run at the same time.
//
// A request's images depend only on its own parameters and seed: its noise
// comes from its own generator, drawn exactly as pipeline.Generate draws it,
// so a request gives the images pipeline.Generate gives for the same options
// (up to the last bit of batched kernels: at most 1/255 on a few pixels).
//
//	p, _ := pipeline.Load(path, pipeline.Options{})
//	defer p.Close()
//	e, _ := serve.New(p, serve.Options{})
//	defer e.Close()
//	imgs, err := e.Generate(ctx, serve.Request{N: 1, Seed: 7})
package serve

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/diffusion/pipeline"
	"github.com/ddpm-go/ddpm/diffusion/sampler"
)

// Engine serves Generate calls for one pipeline with step-level batching.
// It is safe for concurrent use by multiple goroutines. It does not own the
// pipeline: close the Engine before the pipeline.
type Engine struct {
	p     *pipeline.Pipeline
	model diffusion.Model
	sched *diffusion.Schedule
	info  pipeline.Info
	opts  Options

	wake []chan struct{} // per worker: a request arrived or the engine is closing (capacity 1)
	done chan struct{}   // closed when every scheduler goroutine has returned

	mu       sync.Mutex
	queue    []*job // waiting for admission, oldest first
	closing  bool   // no new requests; finish what is admitted and queued
	aborting bool   // cancel everything and return
	load     []load // per worker: what it runs now
	stats    Stats
}

// load is what one worker runs: requests, their images in its forward and
// the rows these take.
type load struct{ requests, slots, rows int }

// New starts an Engine over p: its scheduler goroutines run until Close or
// Shutdown.
func New(p *pipeline.Pipeline, o Options) (*Engine, error) {
	if p == nil {
		return nil, errors.New("serve: nil pipeline")
	}
	switch {
	case o.MaxBatch < 0:
		return nil, fmt.Errorf("serve: MaxBatch %d must be non-negative", o.MaxBatch)
	case o.Workers < 0:
		return nil, fmt.Errorf("serve: Workers %d must be non-negative", o.Workers)
	case o.QueueSize < 0:
		return nil, fmt.Errorf("serve: QueueSize %d must be non-negative", o.QueueSize)
	case o.MaxImages < 0 || o.MaxSteps < 0 || o.MaxGuidance < 0 || o.Timeout < 0:
		return nil, errors.New("serve: limits must be non-negative")
	}
	o = o.withDefaults()
	e := &Engine{p: p, model: p.Model(), sched: p.Schedule(), info: p.Info(), opts: o,
		wake: make([]chan struct{}, o.Workers), done: make(chan struct{}), load: make([]load, o.Workers)}
	e.stats.BatchRows = make([]int64, o.MaxBatch+1)
	e.stats.WorkerRows = make([]int64, o.Workers)
	if err := o.Metrics.add(e); err != nil {
		return nil, err
	}
	if !o.KeepGOMAXPROCS {
		addProcs(o.Workers)
	}
	var workers sync.WaitGroup
	for w := range o.Workers {
		e.wake[w] = make(chan struct{}, 1)
		workers.Add(1)
		go func() {
			defer workers.Done()
			e.loop(w)
		}()
	}
	go func() {
		workers.Wait()
		o.Metrics.remove(e)
		if !o.KeepGOMAXPROCS {
			addProcs(-o.Workers)
		}
		close(e.done)
	}()
	return e, nil
}

// procsMu serialises the engines' changes to GOMAXPROCS.
var procsMu sync.Mutex

// addProcs changes GOMAXPROCS by n, keeping at least one: an engine adds a
// processor per worker (see Options.KeepGOMAXPROCS) and takes them back
// when it stops, relative to whatever the program has set meanwhile.
func addProcs(n int) {
	procsMu.Lock()
	defer procsMu.Unlock()
	runtime.GOMAXPROCS(max(1, runtime.GOMAXPROCS(0)+n))
}

// Options returns the engine's options, defaults filled in.
func (e *Engine) Options() Options { return e.opts }

// Pipeline is the pipeline the engine samples.
func (e *Engine) Pipeline() *pipeline.Pipeline { return e.p }

// Generate samples r.N images. It validates the request (errors wrap
// ErrInvalidRequest), returns ErrQueueFull at once when the queue is full
// and ErrClosed after Close, and otherwise waits for its images. When ctx
// is done first (or Options.Timeout passes) while the request waits, it
// returns ctx's error, wrapped; once admitted, the request's slots leave the
// batch before the next forward and Generate returns then (with the images
// if that forward was the last).
func (e *Engine) Generate(ctx context.Context, r Request) (*pipeline.Images, error) {
	j, err := e.prepare(r)
	if err != nil {
		e.opts.Metrics.request(e.opts.Name, outcomeInvalid, 0)
		return nil, err
	}
	if e.opts.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, e.opts.Timeout)
		defer cancel()
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("serve: %w", err)
	}
	j.ctx = ctx
	e.mu.Lock()
	switch {
	case e.closing:
		e.mu.Unlock()
		e.opts.Metrics.request(e.opts.Name, outcomeClosed, 0)
		return nil, ErrClosed
	case len(e.queue) >= e.opts.QueueSize:
		e.stats.Rejected++
		e.mu.Unlock()
		e.opts.Metrics.request(e.opts.Name, outcomeRejected, 0)
		return nil, ErrQueueFull
	}
	j.enqueued = time.Now()
	e.queue = append(e.queue, j)
	e.stats.Queued = len(e.queue)
	e.mu.Unlock()
	e.signal()

	select {
	case res := <-j.result:
		return res.images, res.err
	case <-ctx.Done():
		// Still queued: leave the queue now.
		e.mu.Lock()
		queued := false
		for i, q := range e.queue {
			if q == j {
				e.queue = append(e.queue[:i], e.queue[i+1:]...)
				e.stats.Queued = len(e.queue)
				e.stats.Cancelled++
				e.opts.Metrics.request(e.opts.Name, outcomeOf(ctx.Err()), time.Since(j.enqueued))
				queued = true
				break
			}
		}
		e.mu.Unlock()
		if queued {
			return nil, fmt.Errorf("serve: %w", ctx.Err())
		}
		// Admitted: its worker sees the context before its next forward
		// and answers, or has just finished it. Its answer is the one the
		// stats count, so it is the one returned: a request cancelled in
		// its last forward gets its images, and is counted completed.
		res := <-j.result
		return res.images, res.err
	}
}

// signal wakes the scheduler goroutines that sleep.
func (e *Engine) signal() {
	for _, w := range e.wake {
		select {
		case w <- struct{}{}:
		default:
		}
	}
}

// Close stops admitting requests, cancels the queued and in-flight ones
// (their Generate returns ErrClosed) and waits for the scheduler goroutines.
// It is safe to call more than once and together with Shutdown.
func (e *Engine) Close() error {
	e.mu.Lock()
	e.closing, e.aborting = true, true
	e.mu.Unlock()
	e.signal()
	<-e.done
	return nil
}

// Shutdown stops admitting requests and lets the queued and in-flight ones
// finish. When ctx is done first, it cancels the rest as Close does and
// returns ctx's error; either way the scheduler goroutines have returned.
func (e *Engine) Shutdown(ctx context.Context) error {
	e.mu.Lock()
	e.closing = true
	e.mu.Unlock()
	e.signal()
	select {
	case <-e.done:
		return nil
	case <-ctx.Done():
		e.Close()
		return ctx.Err()
	}
}

// prepare validates r against the model and the limits and returns its job,
// as pipeline.Generate validates its options.
func (e *Engine) prepare(r Request) (*job, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("serve: %w: %s", ErrInvalidRequest, fmt.Sprintf(format, args...))
	}
	o := e.opts
	if r.N < 1 || r.N > o.MaxImages {
		return nil, bad("n %d out of range [1, %d]", r.N, o.MaxImages)
	}
	k := e.info.NumClasses
	so := r.Sampling
	if so.Sampler == "" {
		so = e.p.DefaultSampling()
	}
	switch {
	case k == 0 && r.Labels != nil:
		return nil, bad("labels given, but the model is unconditional (trained without classes)")
	case k == 0 && so.Guidance != 0:
		return nil, bad("guidance needs a class-conditional model; this one is unconditional")
	case r.Labels != nil && len(r.Labels) != r.N:
		return nil, bad("%d labels for %d images", len(r.Labels), r.N)
	case k > 0 && r.Labels == nil && so.Guidance != 0 && so.Guidance != 1:
		return nil, bad("guidance needs labels (a class per image)")
	case !(so.Guidance >= 0):
		// The stepper below sees no labels and so no guidance: its own
		// check of the weight does not run.
		return nil, bad("guidance weight %g must be finite and >= 0", so.Guidance)
	case so.Guidance > o.MaxGuidance:
		return nil, bad("guidance %g above the limit %g", so.Guidance, o.MaxGuidance)
	case so.Steps > o.MaxSteps:
		return nil, bad("steps %d above the limit %d", so.Steps, o.MaxSteps)
	}
	if k > 0 && e.info.NoNullLabel {
		switch {
		case r.Labels == nil:
			return nil, bad("the model has no null label: give a class for every image")
		case so.Guidance != 0 && so.Guidance != 1:
			return nil, bad("the model has no null label, so classifier-free guidance is not available")
		}
	}
	labels := r.Labels
	if k > 0 && labels == nil {
		labels = make([]int64, r.N)
		for i := range labels {
			labels[i] = pipeline.Unconditional
		}
	}
	for i, l := range labels {
		if l == pipeline.Unconditional && e.info.NoNullLabel {
			return nil, bad("image %d asks for no class, but the model has no null label", i)
		}
		if l != pipeline.Unconditional && (l < 0 || l >= int64(k)) {
			return nil, bad("label %d of image %d out of range [0, %d)", l, i, k)
		}
	}
	so.Target = e.info.Target
	so.NullLabel = int64(k)
	so.Labels, so.Callback = nil, nil
	// The stepper resolves and checks the sampler options; it holds no
	// tensors before its first step.
	st, err := sampler.NewStepper(e.sched, nil, so)
	if err != nil {
		return nil, bad("%v", err)
	}
	steps := len(st.Timesteps())
	st.Close()
	if steps > o.MaxSteps {
		return nil, bad("steps %d above the limit %d", steps, o.MaxSteps)
	}
	rows := 1
	if guided(so) {
		rows = 2
	}
	most := min(64, o.MaxBatch/rows)
	if most < 1 {
		return nil, bad("a guided image needs two rows, but the engine runs %d per forward", o.MaxBatch)
	}
	switch {
	case r.Batch < 0 || r.Batch > most:
		return nil, bad("batch %d out of range [1, %d]", r.Batch, most)
	case r.Batch == 0:
		r.Batch = min(r.N, most)
	}
	var model []int64
	if labels != nil {
		model = make([]int64, len(labels))
		for i, l := range labels {
			if l == pipeline.Unconditional {
				l = int64(k)
			}
			model[i] = l
		}
	}
	if r.PreviewEvery < 0 {
		return nil, bad("preview every %d steps: want 0 (none) or more", r.PreviewEvery)
	}
	j := &job{n: r.N, seed: r.Seed, batch: r.Batch, so: so, rows: rows, steps: steps,
		labels: labels, modelLabels: model, progress: r.Progress, result: make(chan result, 1)}
	if r.Progress != nil {
		j.previewEvery = r.PreviewEvery
	}
	return j, nil
}

// guided reports whether o runs both guidance branches (as the sampler
// decides).
func guided(o sampler.Options) bool { return o.Guidance != 0 && o.Guidance != 1 }
