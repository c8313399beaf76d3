package serve_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion/sampler"
	"github.com/ddpm-go/ddpm/diffusion/serve"
	"github.com/ddpm-go/ddpm/diffusion/serve/api"
)

// accessLog collects a Handler's JSON access log records.
type accessLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *accessLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *accessLog) logger(level slog.Level) *slog.Logger {
	return slog.New(slog.NewJSONHandler(l, &slog.HandlerOptions{Level: level}))
}

// records are the records so far, each a JSON object.
func (l *accessLog) records(t *testing.T) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.buf.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

// want checks the record's fields against fields (JSON numbers as float64).
func want(t *testing.T, what string, rec map[string]any, fields map[string]any) {
	t.Helper()
	for k, v := range fields {
		if rec[k] != v {
			t.Errorf("%s: %s = %v (%T), want %v; record %v", what, k, rec[k], rec[k], v, rec)
		}
	}
}

// One access log record per request, when it is answered, with the
// client's request ID (or a new one when it sends none or an unusable one),
// the generation's parameters and the error code; the probes only at Debug.
func TestHTTPAccessLog(t *testing.T) {
	var l accessLog
	a := newAPI(t, serve.Options{}, serve.HandlerOptions{Logger: l.logger(slog.LevelInfo)})
	a.header.Set(api.RequestIDHeader, "client-7:a/b+c=")
	code, hdr, _ := a.post(t, `{"n": 2, "seed": 5, "steps": 4, "sampler": "ddim", "class": 1}`)
	if code != 200 || hdr.Get(api.RequestIDHeader) != "client-7:a/b+c=" {
		t.Fatalf("generation: %d, request ID %q", code, hdr.Get(api.RequestIDHeader))
	}
	a.header.Set(api.RequestIDHeader, "not usable")
	code, hdr, _ = a.post(t, `{"n": `)
	made := hdr.Get(api.RequestIDHeader)
	if code != 400 || made == "" || made == "not usable" {
		t.Fatalf("bad request: %d, request ID %q", code, made)
	}
	a.header.Del(api.RequestIDHeader)
	if code, _, _ := a.post(t, `{"seed": 2}`); code != 200 {
		t.Fatalf("a generation with the default sampler: %d", code)
	}
	a.header.Set(api.RequestIDHeader, strings.Repeat("x", 129))
	if _, hdr, _ := a.do(t, http.MethodGet, "/healthz", ""); len(hdr.Get(api.RequestIDHeader)) != 26 {
		t.Errorf("a 129-character request ID was kept: %q", hdr.Get(api.RequestIDHeader))
	}
	waitFor(t, func() bool { return len(l.records(t)) >= 3 })
	recs := l.records(t)
	if len(recs) != 3 {
		t.Fatalf("%d records, want 3 (none for /healthz at Info): %v", len(recs), recs)
	}
	want(t, "generation", recs[0], map[string]any{"msg": "request", "level": "INFO", "id": "client-7:a/b+c=",
		"method": "POST", "path": "/v1/images/generations", "status": 200.0, "model": "tiny", "n": 2.0, "seed": 5.0,
		"sampler": "ddim", "steps": 4.0, "stream": false})
	if b, _ := recs[0]["bytes"].(float64); b < 100 {
		t.Errorf("generation: %v bytes logged", recs[0]["bytes"])
	}
	if s, _ := recs[0]["seconds"].(float64); s <= 0 {
		t.Errorf("generation: %v seconds logged", recs[0]["seconds"])
	}
	if _, ok := recs[0]["error"]; ok {
		t.Errorf("generation: an error logged: %v", recs[0])
	}
	want(t, "bad request", recs[1], map[string]any{"id": made, "status": 400.0, "error": "invalid_json"})
	if _, ok := recs[1]["model"]; ok {
		t.Errorf("bad request: a generation logged: %v", recs[1])
	}
	// Steps left to the sampler are logged as it takes them.
	def := a.e.Pipeline().DefaultSampling()
	steps, err := sampler.DefaultSteps(def.Sampler, a.e.Pipeline().Schedule().T())
	if err != nil || def.Steps != 0 {
		t.Fatalf("default sampling %+v: %d steps, %v", def, steps, err)
	}
	want(t, "default sampler", recs[2], map[string]any{"status": 200.0, "n": 1.0, "seed": 2.0,
		"sampler": string(def.Sampler), "steps": float64(steps)})
}

// A streamed generation goes through the access log's writer event by
// event (its first progress arrives while the request runs), and a client
// that leaves mid-stream is logged as client_closed; at Debug the probes
// are logged too.
func TestHTTPAccessLogStream(t *testing.T) {
	var l accessLog
	a := newAPI(t, serve.Options{}, serve.HandlerOptions{Logger: l.logger(slog.LevelDebug)})
	// The second forward waits until the client has left, so that the
	// request cannot finish first.
	left := make(chan struct{})
	a.f.model.setHook(func(call int, rows int64) {
		if call == 2 {
			<-left
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, a.srv.URL+"/v1/images/generations",
		strings.NewReader(`{"n": 1, "seed": 3, "steps": 40, "stream": true}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	readEvents(t, resp.Body, func(ev event) bool {
		if ev.name != "progress" {
			t.Fatalf("event %q first", ev.name)
		}
		return false
	})
	cancel()
	resp.Body.Close()
	close(left)
	if code, _, _ := a.do(t, http.MethodGet, "/healthz", ""); code != 200 {
		t.Fatalf("/healthz: %d", code)
	}
	waitFor(t, func() bool { return len(l.records(t)) >= 2 })
	var stream, probe map[string]any
	for _, r := range l.records(t) {
		switch r["path"] {
		case "/v1/images/generations":
			stream = r
		case "/healthz":
			probe = r
		}
	}
	want(t, "stream", stream, map[string]any{"status": 200.0, "error": "client_closed", "stream": true, "steps": 40.0})
	want(t, "probe", probe, map[string]any{"level": "DEBUG", "status": 200.0})
}

// Without a Logger every response still carries a request ID.
func TestHTTPRequestIDWithoutLog(t *testing.T) {
	a := newAPI(t, serve.Options{}, serve.HandlerOptions{})
	_, hdr, _ := a.do(t, http.MethodGet, "/v1/models", "")
	_, hdr2, _ := a.do(t, http.MethodGet, "/v1/models", "")
	if id := hdr.Get(api.RequestIDHeader); len(id) != 26 || id == hdr2.Get(api.RequestIDHeader) {
		t.Errorf("request IDs %q and %q: want two different 26-character IDs", id, hdr2.Get(api.RequestIDHeader))
	}
}
