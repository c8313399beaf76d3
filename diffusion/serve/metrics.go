package serve

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ddpm-go/ddpm/torch"
	"github.com/prometheus/client_golang/prometheus"
)

// Request outcomes, the values of the outcome label of
// ddpm_serve_requests_total and ddpm_serve_request_seconds.
const (
	outcomeCompleted = "completed"
	outcomeFailed    = "failed"
	outcomeCancelled = "cancelled" // the caller's context was cancelled (a client that left)
	outcomeTimeout   = "timeout"   // its deadline or Options.Timeout passed
	outcomeRejected  = "rejected"  // ErrQueueFull
	outcomeInvalid   = "invalid"   // ErrInvalidRequest
	outcomeClosed    = "closed"    // ErrClosed
)

// outcomeOf names a finished request's outcome from its error.
func outcomeOf(err error) string {
	switch {
	case err == nil:
		return outcomeCompleted
	case errors.Is(err, context.DeadlineExceeded):
		return outcomeTimeout
	case errors.Is(err, context.Canceled):
		return outcomeCancelled
	case errors.Is(err, ErrClosed):
		return outcomeClosed
	}
	return outcomeFailed
}

// Metrics are the Prometheus metrics of one or more engines (label model)
// and of a Handler:
//
//	ddpm_serve_queue_depth{model}              requests waiting for admission
//	ddpm_serve_active_requests{model}          requests being denoised
//	ddpm_serve_active_slots{model}             their images in the current forward
//	ddpm_serve_active_rows{model}              the model rows these take
//	ddpm_serve_batch_rows{model}               histogram: rows per model forward
//	ddpm_serve_step_seconds{model}             histogram: one iteration (forward and every request's step)
//	ddpm_serve_request_seconds{model,outcome}  histogram: a request's time in the engine
//	ddpm_serve_requests_total{model,outcome}   requests by outcome: completed, failed, cancelled,
//	                                           timeout, rejected (queue full), invalid, closed
//	ddpm_serve_images_total{model}             images returned
//	ddpm_serve_http_errors_total{code}         HTTP error responses by their stable code
//	ddpm_cpu_tensor_bytes{state}               the process's CPU tensor memory: in_use by live
//	                                           tensors, cached (freed, kept for reuse; torch.CPUCache)
//	ddpm_weight_cache_bytes                    forms derived from weights: Winograd transforms,
//	                                           bf16 copies (torch.WeightCache)
//
// It is safe for concurrent use.
type Metrics struct {
	batchRows *prometheus.HistogramVec
	stepSec   *prometheus.HistogramVec
	reqSec    *prometheus.HistogramVec
	requests  *prometheus.CounterVec
	imgs      *prometheus.CounterVec
	httpErrs  *prometheus.CounterVec
	gauges    *engineGauges
}

// NewMetrics makes the metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		batchRows: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "ddpm_serve_batch_rows", Help: "Model rows per forward (two per image under guidance).",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256}}, []string{"model"}),
		stepSec: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "ddpm_serve_step_seconds", Help: "Time of one scheduler iteration: the shared forward and every request's sampler step.",
			Buckets: prometheus.ExponentialBuckets(0.002, 2, 14)}, []string{"model"}),
		reqSec: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "ddpm_serve_request_seconds", Help: "A request's time in the engine, queued and sampling.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 16)}, []string{"model", "outcome"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ddpm_serve_requests_total", Help: "Requests by outcome."}, []string{"model", "outcome"}),
		imgs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ddpm_serve_images_total", Help: "Images returned."}, []string{"model"}),
		httpErrs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ddpm_serve_http_errors_total", Help: "HTTP error responses by error code."}, []string{"code"}),
		gauges: &engineGauges{engines: map[string]*Engine{}},
	}
	for _, c := range []prometheus.Collector{m.batchRows, m.stepSec, m.reqSec, m.requests, m.imgs, m.httpErrs, m.gauges} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("serve: metrics: %w", err)
		}
	}
	return m, nil
}

// The methods below do nothing on a nil *Metrics, so that an engine
// without metrics needs no checks.

func (m *Metrics) step(model string, rows int, d time.Duration) {
	if m == nil {
		return
	}
	m.batchRows.WithLabelValues(model).Observe(float64(rows))
	m.stepSec.WithLabelValues(model).Observe(d.Seconds())
}

func (m *Metrics) request(model, outcome string, d time.Duration) {
	if m == nil {
		return
	}
	m.requests.WithLabelValues(model, outcome).Inc()
	if outcome != outcomeInvalid && outcome != outcomeRejected && outcome != outcomeClosed {
		m.reqSec.WithLabelValues(model, outcome).Observe(d.Seconds())
	}
}

func (m *Metrics) images(model string, n int) {
	if m == nil {
		return
	}
	m.imgs.WithLabelValues(model).Add(float64(n))
}

func (m *Metrics) httpError(code string) {
	if m == nil {
		return
	}
	m.httpErrs.WithLabelValues(code).Inc()
}

func (m *Metrics) add(e *Engine) error {
	if m == nil {
		return nil
	}
	return m.gauges.add(e)
}

func (m *Metrics) remove(e *Engine) {
	if m == nil {
		return
	}
	m.gauges.remove(e)
}

// engineGauges reads the gauges of the registered engines from their Stats
// at scrape time.
type engineGauges struct {
	mu      sync.Mutex
	engines map[string]*Engine
}

var gaugeDescs = struct{ queue, requests, slots, rows, tensorBytes, weightBytes *prometheus.Desc }{
	queue:    prometheus.NewDesc("ddpm_serve_queue_depth", "Requests waiting for admission.", []string{"model"}, nil),
	requests: prometheus.NewDesc("ddpm_serve_active_requests", "Requests being denoised.", []string{"model"}, nil),
	slots:    prometheus.NewDesc("ddpm_serve_active_slots", "Images in the current forward.", []string{"model"}, nil),
	rows:     prometheus.NewDesc("ddpm_serve_active_rows", "Model rows in the current forward.", []string{"model"}, nil),
	tensorBytes: prometheus.NewDesc("ddpm_cpu_tensor_bytes",
		"CPU tensor memory of 64 KiB blocks and more: in_use by live tensors, cached (freed and kept for reuse).", []string{"state"}, nil),
	weightBytes: prometheus.NewDesc("ddpm_weight_cache_bytes",
		"Memory of the forms derived from weights for sampling: Winograd transforms, bf16 copies.", nil, nil),
}

func (g *engineGauges) add(e *Engine) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.engines[e.opts.Name]; ok {
		return fmt.Errorf("serve: metrics: an engine named %q is already registered", e.opts.Name)
	}
	g.engines[e.opts.Name] = e
	return nil
}

func (g *engineGauges) remove(e *Engine) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.engines[e.opts.Name] == e {
		delete(g.engines, e.opts.Name)
	}
}

func (g *engineGauges) Describe(ch chan<- *prometheus.Desc) {
	ch <- gaugeDescs.queue
	ch <- gaugeDescs.requests
	ch <- gaugeDescs.slots
	ch <- gaugeDescs.rows
	ch <- gaugeDescs.tensorBytes
	ch <- gaugeDescs.weightBytes
}

func (g *engineGauges) Collect(ch chan<- prometheus.Metric) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for name, e := range g.engines {
		st := e.Stats()
		ch <- prometheus.MustNewConstMetric(gaugeDescs.queue, prometheus.GaugeValue, float64(st.Queued), name)
		ch <- prometheus.MustNewConstMetric(gaugeDescs.requests, prometheus.GaugeValue, float64(st.ActiveRequests), name)
		ch <- prometheus.MustNewConstMetric(gaugeDescs.slots, prometheus.GaugeValue, float64(st.ActiveSlots), name)
		ch <- prometheus.MustNewConstMetric(gaugeDescs.rows, prometheus.GaugeValue, float64(st.ActiveRows), name)
	}
	// The process's, whatever engines there are.
	if c, err := torch.CPUCache(); err == nil {
		ch <- prometheus.MustNewConstMetric(gaugeDescs.tensorBytes, prometheus.GaugeValue, float64(c.InUseBytes), "in_use")
		ch <- prometheus.MustNewConstMetric(gaugeDescs.tensorBytes, prometheus.GaugeValue, float64(c.CachedBytes), "cached")
	}
	if w, err := torch.WeightCache(); err == nil {
		ch <- prometheus.MustNewConstMetric(gaugeDescs.weightBytes, prometheus.GaugeValue, float64(w.Bytes))
	}
}
