package serve

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ddpm-go/ddpm/torch"
)

// Warmup runs, outside the batches and the statistics, one model forward
// for every row count from 1 to Options.MaxBatch (and, for a latent model,
// one decode of an image), so that what libtorch and the shim make on first
// use of a shape (oneDNN's convolution kernels for each batch size, the
// Winograd transforms of the weights, the allocator's blocks) is made
// before the first request rather than during it. A server calls it before
// it listens. On the small preset a fresh server's first one-image request
// took about twice as long as the next, and a request of a batch size not
// seen before 20-40% longer. It returns ctx's error if ctx is done first,
// ErrClosed after Close, and the time it took.
func (e *Engine) Warmup(ctx context.Context) (time.Duration, error) {
	began := time.Now()
	shape := func(n int) []int64 {
		return []int64{int64(n), int64(e.info.LatentChannels), int64(e.info.LatentSize), int64(e.info.LatentSize)}
	}
	for n := 1; n <= e.opts.MaxBatch; n++ {
		if err := e.warmupErr(ctx); err != nil {
			return time.Since(began), err
		}
		if err := e.warmupForward(shape(n)); err != nil {
			return time.Since(began), fmt.Errorf("serve: warmup: model forward over %d rows: %w", n, err)
		}
	}
	if err := e.warmupErr(ctx); err != nil {
		return time.Since(began), err
	}
	s := torch.NewScope(torch.Inference)
	defer s.Close()
	x := s.Zeros(shape(1), torch.Float32, e.p.Device())
	if err := s.Err(); err != nil {
		return time.Since(began), fmt.Errorf("serve: warmup: %w", err)
	}
	if _, err := e.pixels(x); err != nil {
		return time.Since(began), fmt.Errorf("serve: warmup: %w", err)
	}
	return time.Since(began), nil
}

// warmupErr is why Warmup stops now, if it does.
func (e *Engine) warmupErr(ctx context.Context) error {
	e.mu.Lock()
	closing := e.closing
	e.mu.Unlock()
	switch {
	case closing:
		return ErrClosed
	case ctx.Err() != nil:
		return fmt.Errorf("serve: warmup: %w", ctx.Err())
	}
	return nil
}

// warmupForward runs the model over zero inputs of the given shape, at the
// middle timestep, with label 0 for a class-conditional model.
func (e *Engine) warmupForward(shape []int64) error {
	s := torch.NewScope(torch.Inference)
	defer s.Close()
	dev := e.p.Device()
	n := shape[0]
	x := s.Zeros(shape, torch.Float32, dev)
	t := s.Full([]int64{n}, float64(e.sched.T()/2), torch.Int64, dev)
	var labels *torch.Tensor
	if e.info.NumClasses > 0 {
		labels = s.Full([]int64{n}, 0, torch.Int64, dev)
	}
	if out := e.model.Forward(s, x, t, labels); out == nil && s.Err() == nil {
		return errors.New("model returned no tensor")
	}
	return s.Err()
}
