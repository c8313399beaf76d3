package serve

import (
	"slices"
	"time"
)

// Stats are an Engine's counters, for metrics: gauges of the moment and
// totals since New.
type Stats struct {
	// Queued is the number of requests waiting for admission.
	Queued int
	// ActiveRequests, ActiveSlots and ActiveRows are the requests being
	// denoised, their images in the current forward and the model rows
	// these take (two per image under guidance).
	ActiveRequests, ActiveSlots, ActiveRows int
	// Forwards is the number of model forwards run; Rows their rows in
	// all.
	Forwards, Rows int64
	// WorkerRows[w] is the rows worker w has run (Options.Workers).
	WorkerRows []int64
	// SharedForwards counts the forwards that held slots of more than one
	// request.
	SharedForwards int64
	// BatchRows[r] counts the forwards of r rows (r in [1, MaxBatch]).
	BatchRows []int64
	// ForwardTime is the time spent in model forwards, StepTime in whole
	// iterations (the forward and every request's sampler step): with
	// Forwards they say where a served image's time goes. (On CUDA a
	// forward's time is that of queueing its kernels.)
	ForwardTime, StepTime time.Duration
	// Completed, Failed, Cancelled and Rejected count requests: done,
	// failed (model or engine error, Close), stopped by their context,
	// and refused with ErrQueueFull.
	Completed, Failed, Cancelled, Rejected int64
	// Images counts the images returned.
	Images int64
	// Trims counts the times the engine gave unused CPU memory back
	// (Options.TrimEvery), TrimmedBytes the cached bytes it gave.
	Trims, TrimmedBytes int64
}

// Stats returns a snapshot of the engine's counters.
func (e *Engine) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	st := e.stats
	st.BatchRows = slices.Clone(e.stats.BatchRows)
	st.WorkerRows = slices.Clone(e.stats.WorkerRows)
	return st
}
