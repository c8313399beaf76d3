package serve

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/ddpm-go/ddpm/diffusion/pipeline"
	"github.com/ddpm-go/ddpm/diffusion/sampler"
	"github.com/ddpm-go/ddpm/torch"
)

// job is one request in the engine. The fields below result are touched by
// its worker's goroutine only.
type job struct {
	ctx          context.Context
	n, batch     int
	seed         uint64
	so           sampler.Options // resolved against the model: Target, NullLabel
	rows         int             // model rows per image: 2 under guidance
	steps        int
	labels       []int64 // the images' labels (Unconditional for none), nil for an unconditional model
	modelLabels  []int64 // the same with the null label substituted
	progress     func(Progress)
	previewEvery int // Request.PreviewEvery, 0 without Progress
	enqueued     time.Time
	result       chan result // capacity 1: the scheduler never blocks on it

	gen       *torch.Generator
	st        *sampler.Stepper
	timesteps []int
	x         *torch.Tensor // the current batch x_t, owned by the job
	i         int           // the next step of the current batch
	start, b  int           // the current batch's first image and size
	active    bool          // counted in its worker's load (admitted)
	worker    int           // the worker that admitted it
	counted   int           // the slots its worker's load counts (b when counted; a smaller last batch changes b first)
	pixels    []float32
}

type result struct {
	images *pipeline.Images
	err    error
}

// report tells the request's Progress that done steps are done, with the
// current batch's preview (or nil).
func (j *job) report(done int, preview *pipeline.Images) {
	if j.progress != nil {
		j.progress(Progress{Step: done, Steps: (j.n + j.batch - 1) / j.batch * j.steps, Images: j.start, Preview: preview})
	}
}

// release frees the job's tensors and generator.
func (j *job) release() {
	if j.st != nil {
		j.st.Close()
		j.st = nil
	}
	j.x.Close()
	j.x = nil
	j.gen.Close()
	j.gen = nil
}

// loop is scheduler goroutine w: all torch work of its requests runs here.
// Worker 0 also trims the memory cache, which is the process's.
func (e *Engine) loop(w int) {
	var active []*job
	lastTrim := time.Now()
	trims := w == 0 && e.opts.TrimEvery > 0
	for {
		if trims && time.Since(lastTrim) >= e.opts.TrimEvery {
			e.trim()
			lastTrim = time.Now()
		}
		e.mu.Lock()
		if e.aborting {
			queued := e.queue
			e.queue = nil
			e.stats.Queued = 0
			e.mu.Unlock()
			for _, j := range append(active, queued...) {
				e.finish(j, nil, ErrClosed)
			}
			return
		}
		e.mu.Unlock()
		active = e.dropCancelled(active)
		active = e.admit(w, active)
		if len(active) == 0 {
			e.mu.Lock()
			idle, closing := len(e.queue) == 0, e.closing
			e.mu.Unlock()
			if idle && closing {
				return
			}
			if idle {
				e.waitIdle(w, trims, lastTrim)
			}
			continue
		}
		active = e.step(w, active)
	}
}

// waitIdle waits for a request to worker w, or, when it trims the memory,
// until the next trim is due: an idle server gives back what its last
// requests left.
func (e *Engine) waitIdle(w int, trims bool, lastTrim time.Time) {
	if !trims {
		<-e.wake[w]
		return
	}
	t := time.NewTimer(time.Until(lastTrim.Add(e.opts.TrimEvery)))
	defer t.Stop()
	select {
	case <-e.wake[w]:
	case <-t.C:
	}
}

// trim gives back the cached memory blocks no forward or step has taken in
// the last TrimEvery. A failure costs nothing but the memory:
// it is not the requests' business.
func (e *Engine) trim() {
	freed, err := torch.TrimCPUCache(e.opts.TrimEvery)
	if err != nil {
		return
	}
	e.mu.Lock()
	e.stats.Trims++
	e.stats.TrimmedBytes += freed
	e.mu.Unlock()
}

// finish hands a job its result, frees it and counts it.
func (e *Engine) finish(j *job, imgs *pipeline.Images, err error) {
	j.release()
	// Counted before the caller hears, so that Stats after Generate
	// returns include the request.
	e.mu.Lock()
	if j.active {
		// The gauges drop before the caller hears, like the counters.
		l := &e.load[j.worker]
		l.requests--
		l.slots -= j.counted
		l.rows -= j.counted * j.rows
		e.publishLoad()
	}
	switch {
	case err == nil:
		e.stats.Completed++
		e.stats.Images += int64(imgs.N)
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		e.stats.Cancelled++
	default:
		e.stats.Failed++
	}
	e.mu.Unlock()
	e.opts.Metrics.request(e.opts.Name, outcomeOf(err), time.Since(j.enqueued))
	if err == nil {
		e.opts.Metrics.images(e.opts.Name, imgs.N)
	}
	j.result <- result{imgs, err}
}

// dropCancelled retires the jobs whose context is done: their slots leave
// before the next forward.
func (e *Engine) dropCancelled(active []*job) []*job {
	keep := active[:0]
	for _, j := range active {
		if err := j.ctx.Err(); err != nil {
			e.finish(j, nil, fmt.Errorf("serve: %w", err))
			continue
		}
		keep = append(keep, j)
	}
	clear(active[len(keep):])
	return keep
}

// admit moves queued requests, oldest first, into worker w's batch while
// their rows fit in MaxBatch and in w's share of all rows (running and
// waiting, spread evenly over the workers), and starts them. The share
// keeps the first worker awake from taking every request. A request that
// would take w over its share is still w's when w is below the share and
// no other worker has fewer rows, so that a request never waits while
// every worker has room for it (two workers at one row each and a request
// of two: the share is two, and neither would take it if it had to fit).
func (e *Engine) admit(w int, active []*job) []*job {
	used := 0
	for _, j := range active {
		used += j.b * j.rows
	}
	var admitted, cancelled []*job
	e.mu.Lock()
	total := 0
	for _, l := range e.load {
		total += l.rows
	}
	for _, j := range e.queue {
		total += min(j.batch, j.n) * j.rows
	}
	share := (total + len(e.load) - 1) / len(e.load)
	for len(e.queue) > 0 {
		j := e.queue[0]
		if j.ctx.Err() != nil {
			cancelled = append(cancelled, j)
			e.queue = e.queue[1:]
			continue
		}
		need := min(j.batch, j.n) * j.rows
		if used+need > e.opts.MaxBatch || (used > 0 && used+need > share && (used >= share || e.otherBelow(w, used))) {
			break
		}
		used += need
		admitted = append(admitted, j)
		e.queue = e.queue[1:]
	}
	e.stats.Queued = len(e.queue)
	e.mu.Unlock()
	for _, j := range cancelled {
		e.finish(j, nil, fmt.Errorf("serve: %w", j.ctx.Err()))
	}
	for _, j := range admitted {
		gen, err := torch.NewGenerator(j.seed, e.p.Device())
		if err != nil {
			e.finish(j, nil, fmt.Errorf("serve: %w", err))
			continue
		}
		j.gen = gen
		j.pixels = make([]float32, 0, j.n*e.info.Channels*e.info.Size*e.info.Size)
		if err := e.startBatch(j); err != nil {
			e.finish(j, nil, fmt.Errorf("serve: %w", err))
			continue
		}
		active = append(active, j)
	}
	e.setActive(w, active)
	return active
}

// startBatch begins the job's next batch of images: a fresh sampler state
// and initial noise x_T drawn from the job's generator, as pipeline.Generate
// draws it for each of its batches.
func (e *Engine) startBatch(j *job) error {
	b := min(j.batch, j.n-j.start)
	st, err := sampler.NewStepper(e.sched, j.gen, j.so)
	if err != nil {
		return err
	}
	s := torch.NewScope(torch.Inference)
	defer s.Close()
	shape := []int64{int64(b), int64(e.info.LatentChannels), int64(e.info.LatentSize), int64(e.info.LatentSize)}
	x := s.Randn(shape, torch.Float32, j.gen.Device(), j.gen)
	if err := s.Err(); err != nil {
		st.Close()
		return fmt.Errorf("initial noise: %w", err)
	}
	j.st, j.timesteps, j.x, j.i, j.b = st, st.Timesteps(), s.Keep(x), 0, b
	return nil
}

// otherBelow reports whether a worker other than w has fewer than rows
// rows. The caller holds e.mu.
func (e *Engine) otherBelow(w, rows int) bool {
	for i, l := range e.load {
		if i != w && l.rows < rows {
			return true
		}
	}
	return false
}

// setActive records worker w's active jobs as its load.
func (e *Engine) setActive(w int, active []*job) {
	l := load{requests: len(active)}
	for _, j := range active {
		j.active, j.worker, j.counted = true, w, j.b
		l.slots += j.b
		l.rows += j.b * j.rows
	}
	e.mu.Lock()
	e.load[w] = l
	e.publishLoad()
	e.mu.Unlock()
}

// publishLoad sets the active gauges of the stats to the workers' loads.
// The caller holds e.mu.
func (e *Engine) publishLoad() {
	var sum load
	for _, l := range e.load {
		sum.requests += l.requests
		sum.slots += l.slots
		sum.rows += l.rows
	}
	e.stats.ActiveRequests, e.stats.ActiveSlots, e.stats.ActiveRows = sum.requests, sum.slots, sum.rows
}

// step runs one model forward over every slot active in worker w, then one
// sampler step of each job, and returns the jobs still running.
func (e *Engine) step(w int, active []*job) []*job {
	began := time.Now()
	s := torch.NewScope(torch.Inference)
	defer s.Close()
	dev := e.p.Device()
	var xs []*torch.Tensor
	var ts, ls, sizes []int64
	for _, j := range active {
		t := int64(j.timesteps[j.i])
		for range j.rows {
			xs = append(xs, j.x)
			sizes = append(sizes, int64(j.b))
			for k := range j.b {
				ts = append(ts, t)
				if j.modelLabels != nil {
					ls = append(ls, j.modelLabels[j.start+k])
				}
			}
		}
		if j.rows == 2 && j.modelLabels != nil {
			// The second copy is the unconditional branch: null labels.
			for k := range j.b {
				ls[len(ls)-j.b+k] = int64(e.info.NumClasses)
			}
		}
	}
	n := int64(len(ts))
	// One iteration's time: the shared forward and every request's step.
	// The iteration is counted before its finished requests are answered,
	// so that Stats and the metrics read after an answer include its last
	// step.
	var forward time.Duration
	type answer struct {
		j    *job
		imgs *pipeline.Images
		err  error
	}
	var answers []answer
	defer func() {
		d := time.Since(began)
		// Both together: a Stats read in between sees neither, so the
		// forwards' time never exceeds the iterations'.
		e.mu.Lock()
		e.stats.ForwardTime += forward
		e.stats.StepTime += d
		e.mu.Unlock()
		e.opts.Metrics.step(e.opts.Name, int(n), d)
		for _, a := range answers {
			e.finish(a.j, a.imgs, a.err)
		}
	}()
	x := s.Cat(xs, 0)
	t := s.FromInt64s(ts, n)
	var labels *torch.Tensor
	if e.info.NumClasses > 0 {
		labels = s.FromInt64s(ls, n)
	}
	if dev != torch.CPU {
		t = s.To(t, dev)
		if labels != nil {
			labels = s.To(labels, dev)
		}
	}
	var parts []*torch.Tensor
	forwardStart := time.Now()
	if s.Err() == nil {
		out := e.model.Forward(s, x, t, labels)
		if out == nil && s.Err() == nil {
			s.Fail(errors.New("model returned no tensor"))
		}
		parts = s.Split(out, sizes, 0)
	}
	forward = time.Since(forwardStart)
	e.mu.Lock()
	e.stats.Forwards++
	e.stats.Rows += n
	e.stats.WorkerRows[w] += n
	if n < int64(len(e.stats.BatchRows)) {
		e.stats.BatchRows[n]++
	}
	if len(active) > 1 {
		e.stats.SharedForwards++
	}
	e.mu.Unlock()
	if err := s.Err(); err != nil {
		for _, j := range active {
			answers = append(answers, answer{j, nil, fmt.Errorf("serve: model forward over %d rows: %w", n, err)})
		}
		return nil
	}
	keep := active[:0]
	p := 0
	for _, j := range active {
		jp := parts[p : p+j.rows]
		p += j.rows
		done, err := e.advance(j, jp)
		switch {
		case err != nil:
			answers = append(answers, answer{j, nil, fmt.Errorf("serve: %w", err)})
		case done:
			answers = append(answers, answer{j, &pipeline.Images{N: j.n, C: e.info.Channels, H: e.info.Size,
				W: e.info.Size, Pixels: j.pixels, Labels: j.labels}, nil})
		default:
			keep = append(keep, j)
		}
	}
	clear(active[len(keep):])
	return keep
}

// advance runs one sampler step of j given its rows of the model output
// (conditional and unconditional under guidance), in a scope of its own so
// that one request's failure leaves the others alone. It reports whether
// the job has all its images.
func (e *Engine) advance(j *job, parts []*torch.Tensor) (bool, error) {
	s := torch.NewScope(torch.Inference)
	defer s.Close()
	// The job's rows move into its scope: a stepper keeps tensors across
	// steps (DPM-Solver++'s x0 may be the model output itself) with Keep,
	// which hands out tensors of its own scope only.
	s.Adopt(parts...)
	out := parts[0]
	if j.rows == 2 {
		// Classifier-free guidance as the sampler combines it (guidance.go):
		// out = out(x, t, ∅) + w (out(x, t, c) - out(x, t, ∅)).
		cond, uncond := parts[0], parts[1]
		out = s.Add(uncond, s.MulScalar(s.Sub(cond, uncond), j.so.Guidance))
		if err := s.Err(); err != nil {
			return false, fmt.Errorf("guidance: %w", err)
		}
	}
	next, x0, err := j.st.Step(s, j.i, j.x, out, nil)
	if err != nil {
		return false, err
	}
	s.Keep(next)
	if next != j.x {
		j.x.Close()
	}
	j.x = next
	j.i++
	if j.i < len(j.timesteps) {
		var preview *pipeline.Images
		if j.previewEvery > 0 && j.i%j.previewEvery == 0 {
			pix, err := e.pixels(x0)
			if err != nil {
				return false, fmt.Errorf("preview: %w", err)
			}
			preview = &pipeline.Images{N: j.b, C: e.info.Channels, H: e.info.Size, W: e.info.Size, Pixels: pix}
			if j.labels != nil {
				preview.Labels = slices.Clone(j.labels[j.start : j.start+j.b])
			}
		}
		j.report(j.start/j.batch*j.steps+j.i, preview)
		return false, nil
	}
	pix, err := e.pixels(j.x)
	if err != nil {
		return false, err
	}
	j.pixels = append(j.pixels, pix...)
	j.start += j.b
	j.report((j.start+j.batch-1)/j.batch*j.steps, nil)
	j.st.Close()
	j.st = nil
	j.x.Close()
	j.x = nil
	if j.start == j.n {
		return true, nil
	}
	return false, e.startBatch(j)
}

// pixels are the finished batch's values in [-1, 1], checked as
// pipeline.Generate checks them.
func (e *Engine) pixels(x *torch.Tensor) ([]float32, error) { return e.p.Pixels(x) }
