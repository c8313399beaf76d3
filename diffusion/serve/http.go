package serve

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ddpm-go/ddpm/diffusion/serve/api"
)

// The HTTP API (Handler) and its wire types, error codes and headers are
// package api's.

// DefaultMaxBodyBytes is the default limit on a request body.
const DefaultMaxBodyBytes = 64 << 10

// DefaultWriteTimeout is the default time a client gets to take each
// response write (a body, or one event of a stream).
const DefaultWriteTimeout = 30 * time.Second

// Model is one model a Handler serves: requests name it.
type Model struct {
	Name   string
	Engine *Engine
}

// HandlerOptions configure a Handler; the zero value means the defaults.
type HandlerOptions struct {
	// Token, if not empty, is required as "Authorization: Bearer TOKEN" on
	// every endpoint but /healthz and /readyz (401 without it).
	Token string
	// MaxBodyBytes limits a request body; default DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// WriteTimeout bounds each write to a client, so that one that stops
	// reading is dropped; default DefaultWriteTimeout.
	WriteTimeout time.Duration
	// Metrics, if not nil, counts the error responses by code.
	Metrics *Metrics
	// Gatherer, if not nil, is served at GET /metrics.
	Gatherer prometheus.Gatherer
	// RetryAfter is the Retry-After of a 429, in whole seconds; default 1.
	RetryAfter int
	// Logger, if not nil, gets one access log record ("request") per
	// request when it is answered: its ID (api.RequestIDHeader), method, path,
	// status, body bytes, seconds and remote address, the error code if
	// any, and for a generation the model, n, seed, sampler, steps and
	// whether it streamed. The level is Info, Error for a 5xx (or a
	// stream's internal error, after its 200), and Debug
	// for /healthz, /readyz and /metrics. A client that left before its
	// answer is logged with status 499 and error client_closed.
	Logger *slog.Logger
}

// Handler is the HTTP/JSON API over engines. It is safe for concurrent use.
type Handler struct {
	models   []Model
	opts     HandlerOptions
	mux      *http.ServeMux
	draining atomic.Bool
	warming  atomic.Int32 // Warmup calls running
}

// NewHandler serves models (names unique, without spaces or slashes).
func NewHandler(models []Model, o HandlerOptions) (*Handler, error) {
	if len(models) == 0 {
		return nil, errors.New("serve: no models to serve")
	}
	for i, m := range models {
		switch {
		case m.Engine == nil:
			return nil, fmt.Errorf("serve: model %q has no engine", m.Name)
		case m.Name == "" || strings.ContainsAny(m.Name, " /?#"):
			return nil, fmt.Errorf("serve: model name %q: want a name without spaces or slashes", m.Name)
		case slices.ContainsFunc(models[:i], func(o Model) bool { return o.Name == m.Name }):
			return nil, fmt.Errorf("serve: model %s given twice", m.Name)
		}
	}
	switch {
	case o.MaxBodyBytes < 0 || o.WriteTimeout < 0 || o.RetryAfter < 0:
		return nil, errors.New("serve: handler limits must be non-negative")
	}
	if o.MaxBodyBytes == 0 {
		o.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if o.WriteTimeout == 0 {
		o.WriteTimeout = DefaultWriteTimeout
	}
	if o.RetryAfter == 0 {
		o.RetryAfter = 1
	}
	h := &Handler{models: slices.Clone(models), opts: o, mux: http.NewServeMux()}
	h.mux.HandleFunc("/v1/images/generations", h.authorized(h.generations))
	h.mux.HandleFunc("/v1/models", h.authorized(h.listModels))
	h.mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		h.writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	h.mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		switch {
		case h.draining.Load():
			h.writeError(w, http.StatusServiceUnavailable, api.CodeShuttingDown, "the server is shutting down")
		case h.warming.Load() > 0:
			h.writeError(w, http.StatusServiceUnavailable, api.CodeWarmingUp, "the models are warming up")
		default:
			h.writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
		}
	})
	if o.Gatherer != nil {
		h.mux.Handle("/metrics", h.authorized(promhttp.HandlerFor(o.Gatherer, promhttp.HandlerOpts{}).ServeHTTP))
	}
	h.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		h.writeError(w, http.StatusNotFound, api.CodeNotFound, fmt.Sprintf("no endpoint %s", r.URL.Path))
	})
	return h, nil
}

// ServeHTTP serves the API. Every response carries the request's ID in
// api.RequestIDHeader.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := requestID(r)
	w.Header().Set(api.RequestIDHeader, id)
	if h.opts.Logger == nil {
		h.mux.ServeHTTP(w, r)
		return
	}
	h.serveLogged(w, r, id)
}

// Warmup warms each model's engine up (Engine.Warmup) in turn while /readyz
// answers 503 (warming_up), so that a load balancer sends no traffic before
// the first requests can be served at full speed; generations sent anyway
// are served. report, if not nil, gets each model's warm-up time. It
// returns the first error (ctx's when ctx is done).
func (h *Handler) Warmup(ctx context.Context, report func(model string, d time.Duration)) error {
	h.warming.Add(1)
	defer h.warming.Add(-1)
	for _, m := range h.models {
		d, err := m.Engine.Warmup(ctx)
		if err != nil {
			return fmt.Errorf("model %s: %w", m.Name, err)
		}
		if report != nil {
			report(m.Name, d)
		}
	}
	return nil
}

// Drain makes /readyz answer 503 and refuses new generations (503
// shutting_down), as the first move of a graceful shutdown; the engines'
// Shutdown then finishes the requests in flight.
func (h *Handler) Drain() { h.draining.Store(true) }

// authorized wraps f with the bearer-token check.
func (h *Handler) authorized(f http.HandlerFunc) http.HandlerFunc {
	if h.opts.Token == "" {
		return f
	}
	want := []byte(h.opts.Token)
	return func(w http.ResponseWriter, r *http.Request) {
		// The scheme is case-insensitive (RFC 9110); the token is compared
		// in constant time.
		scheme, token, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		if !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare([]byte(token), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="ddpm"`)
			h.writeError(w, http.StatusUnauthorized, api.CodeUnauthorized, "a valid bearer token is required (Authorization: Bearer TOKEN)")
			return
		}
		f(w, r)
	}
}

func newAPIError(code, msg string) api.ErrorBody {
	return api.ErrorBody{Error: api.Error{Code: code, Message: msg}}
}

// deadline gives the client WriteTimeout for the next write.
func (h *Handler) deadline(w http.ResponseWriter) {
	// Not every ResponseWriter supports deadlines (httptest's recorder):
	// then there is nothing to bound.
	http.NewResponseController(w).SetWriteDeadline(time.Now().Add(h.opts.WriteTimeout))
}

func (h *Handler) writeJSON(w http.ResponseWriter, status int, v any) {
	h.deadline(w)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func (h *Handler) writeError(w http.ResponseWriter, status int, code, msg string) {
	h.opts.Metrics.httpError(code)
	noteError(w, code)
	if status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", fmt.Sprint(h.opts.RetryAfter))
	}
	h.writeJSON(w, status, newAPIError(code, msg))
}

func (h *Handler) listModels(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", "GET")
		h.writeError(w, http.StatusMethodNotAllowed, api.CodeMethodNotAllowed, "use GET")
		return
	}
	out := api.ModelList{Data: []api.ModelInfo{}}
	for _, m := range h.models {
		p, o := m.Engine.Pipeline(), m.Engine.Options()
		info, def := p.Info(), p.DefaultSampling()
		out.Data = append(out.Data, api.ModelInfo{ID: m.Name, Channels: info.Channels, Size: info.Size, NumClasses: info.NumClasses,
			ClassNames: info.ClassNames, Target: string(info.Target), Precision: string(p.Precision()), T: p.Schedule().T(),
			DefaultSampler: string(def.Sampler), DefaultSteps: stepsOf(def, p.Schedule().T()),
			MaxBatch: o.MaxBatch, Workers: o.Workers, MaxImages: o.MaxImages, MaxSteps: o.MaxSteps})
	}
	h.writeJSON(w, http.StatusOK, out)
}

// pick finds the requested model; an empty name means the only one.
func (h *Handler) pick(name string) (Model, error) {
	if name == "" {
		if len(h.models) == 1 {
			return h.models[0], nil
		}
		names := make([]string, len(h.models))
		for i, m := range h.models {
			names[i] = m.Name
		}
		sort.Strings(names)
		return Model{}, fmt.Errorf("model: name one of %s", strings.Join(names, ", "))
	}
	for _, m := range h.models {
		if m.Name == name {
			return m, nil
		}
	}
	return Model{}, fmt.Errorf("model %q is not served (GET /v1/models lists them)", name)
}
