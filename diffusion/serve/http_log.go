package serve

import (
	"context"
	"crypto/rand"
	"log/slog"
	"net/http"
	"time"

	"github.com/ddpm-go/ddpm/diffusion/sampler"
	"github.com/ddpm-go/ddpm/diffusion/serve/api"
)

// codeClientClosed is the access log's error for a client that left before
// its answer (status 499 in the log, as nginx writes it): it is no API
// error code, since no response is sent.
const codeClientClosed = "client_closed"

// statusClientClosed is the access log's status for such a request.
const statusClientClosed = 499

// requestID is the client's ID when it is usable, else a new random one.
func requestID(r *http.Request) string {
	id := r.Header.Get(api.RequestIDHeader)
	if len(id) == 0 || len(id) > 128 {
		return rand.Text()
	}
	for _, c := range []byte(id) {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		switch c {
		case '-', '_', '.', ':', '+', '/', '=':
			ok = true
		}
		if !ok {
			return rand.Text()
		}
	}
	return id
}

// loggedWriter is what a request is answered through when the handler has
// a Logger: it records what the access log says of the answer.
type loggedWriter struct {
	http.ResponseWriter
	status int    // the status written, 0 before the header
	bytes  int64  // the body's bytes written
	code   string // the error code answered (or codeClientClosed), if any
	// The generation, once the endpoint has parsed it, and its steps (the
	// sampler's default resolved).
	model string
	gen   *Request
	steps int
	// stream is set for a streamed generation.
	stream bool
}

func (w *loggedWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *loggedWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

// Flush sends what is buffered (a stream's events), as the writer under it
// does; http.ResponseController reaches that writer through Unwrap.
func (w *loggedWriter) Flush() { http.NewResponseController(w.ResponseWriter).Flush() }

// Unwrap is the writer under w, for http.ResponseController.
func (w *loggedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// noteError records the error code a request is answered with (nothing
// without a Logger).
func noteError(w http.ResponseWriter, code string) {
	if lw, ok := w.(*loggedWriter); ok {
		lw.code = code
	}
}

// noteGeneration records the generation a request asks of m.
func noteGeneration(w http.ResponseWriter, m Model, req Request, stream bool) {
	if lw, ok := w.(*loggedWriter); ok {
		lw.model, lw.gen, lw.stream = m.Name, &req, stream
		lw.steps = stepsOf(req.Sampling, m.Engine.Pipeline().Schedule().T())
	}
}

// serveLogged serves r through a loggedWriter and writes its access log
// line: level Info, Error for a 5xx or an internal error, Debug for the
// probes and /metrics (which a load balancer and Prometheus call every few
// seconds).
func (h *Handler) serveLogged(w http.ResponseWriter, r *http.Request, id string) {
	lw := &loggedWriter{ResponseWriter: w}
	start := time.Now()
	h.mux.ServeHTTP(lw, r)
	elapsed := time.Since(start)
	status := lw.status
	if status == 0 {
		status = http.StatusOK // what net/http sends for an empty answer
		if r.Context().Err() != nil {
			status, lw.code = statusClientClosed, codeClientClosed
		}
	}
	level := slog.LevelInfo
	switch {
	case r.URL.Path == "/healthz" || r.URL.Path == "/readyz" || r.URL.Path == "/metrics":
		level = slog.LevelDebug
	case status >= 500 || lw.code == api.CodeInternal: // a stream's error comes after its 200
		level = slog.LevelError
	}
	attrs := []slog.Attr{slog.String("id", id), slog.String("method", r.Method), slog.String("path", r.URL.Path),
		slog.Int("status", status), slog.Int64("bytes", lw.bytes), slog.Float64("seconds", elapsed.Seconds()),
		slog.String("remote", r.RemoteAddr)}
	if lw.code != "" {
		attrs = append(attrs, slog.String("error", lw.code))
	}
	if g := lw.gen; g != nil {
		attrs = append(attrs, slog.String("model", lw.model), slog.Int("n", g.N), slog.Uint64("seed", g.Seed),
			slog.String("sampler", string(g.Sampling.Sampler)), slog.Int("steps", lw.steps),
			slog.Bool("stream", lw.stream))
	}
	h.opts.Logger.LogAttrs(context.Background(), level, "request", attrs...)
}

// stepsOf is the steps the sampler of o takes over T trained timesteps:
// o.Steps, or its sampler's default for 0 (logged and listed instead of 0).
func stepsOf(o sampler.Options, T int) int {
	if o.Steps != 0 {
		return o.Steps
	}
	steps, _ := sampler.DefaultSteps(o.Sampler, T)
	return steps
}
