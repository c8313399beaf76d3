package serve_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"image/png"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ddpm-go/ddpm/diffusion/pipeline"
	"github.com/ddpm-go/ddpm/diffusion/sampler"
	"github.com/ddpm-go/ddpm/diffusion/serve"
	"github.com/ddpm-go/ddpm/torch"
)

// The client's view of the API's JSON.
type (
	apiError struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	image struct {
		Index      int     `json:"index"`
		Class      *int64  `json:"class"`
		B64PNG     string  `json:"b64_png"`
		B64Float32 string  `json:"b64_float32"`
		Shape      []int64 `json:"shape"`
	}
	response struct {
		Model string  `json:"model"`
		Seed  uint64  `json:"seed"`
		Data  []image `json:"data"`
	}
)

// testServer is a test server: the tiny fixture with two classes as model
// "tiny", behind a Handler with Prometheus metrics.
type testServer struct {
	srv    *httptest.Server
	h      *serve.Handler
	e      *serve.Engine
	f      *fixture
	reg    *prometheus.Registry
	header http.Header // sent with every request
}

func newAPI(t *testing.T, o serve.Options, ho serve.HandlerOptions) *testServer {
	t.Helper()
	f := tinyPipeline(t, 2)
	start := torch.LiveTensors()
	reg := prometheus.NewRegistry()
	m, err := serve.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	o.Metrics, o.Name = m, "tiny"
	e, err := serve.New(f.p, o)
	if err != nil {
		t.Fatal(err)
	}
	ho.Metrics, ho.Gatherer = m, reg
	h, err := serve.NewHandler([]serve.Model{{Name: "tiny", Engine: e}}, ho)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		srv.Close()
		e.Close()
		checkNoLeaks(t, start)
	})
	return &testServer{srv: srv, h: h, e: e, f: f, reg: reg, header: http.Header{}}
}

func (a *testServer) do(t *testing.T, method, path, body string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, a.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range a.header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

func (a *testServer) post(t *testing.T, body string) (int, http.Header, []byte) {
	t.Helper()
	return a.do(t, http.MethodPost, "/v1/images/generations", body)
}

// generate is what the request gives through pipeline.Generate.
func generate(t *testing.T, p *pipeline.Pipeline, n int, o pipeline.GenerateOptions) *pipeline.Images {
	t.Helper()
	imgs, err := p.Generate(context.Background(), n, o)
	if err != nil {
		t.Fatal(err)
	}
	return imgs
}

func decodeFloats(t *testing.T, b64 string) []float32 {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		t.Fatal(err)
	}
	v := make([]float32, len(b)/4)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return v
}

func maxDiff(a, b []float32) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	worst := 0.0
	for i := range a {
		worst = max(worst, math.Abs(float64(a[i]-b[i])))
	}
	return worst
}

func TestHTTPGenerate(t *testing.T) {
	a := newAPI(t, serve.Options{}, serve.HandlerOptions{})
	req := `{"n": 2, "seed": 7, "sampler": "ddim", "steps": 4, "class": 1, "guidance": 2}`
	code, _, body := a.post(t, req)
	if code != http.StatusOK {
		t.Fatalf("status %d: %s", code, body)
	}
	var resp response
	if err := json.Unmarshal(body, &resp); err != nil {
		t.Fatal(err)
	}
	if resp.Model != "tiny" || resp.Seed != 7 || len(resp.Data) != 2 || resp.Data[1].Class == nil || *resp.Data[1].Class != 1 {
		t.Fatalf("response %+v", resp)
	}
	b, _ := base64.StdEncoding.DecodeString(resp.Data[0].B64PNG)
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil || img.Bounds().Dx() != 16 || img.Bounds().Dy() != 16 {
		t.Fatalf("PNG: %v, %v", err, img)
	}
	// The same request gives the same PNG.
	_, _, again := a.post(t, req)
	var resp2 response
	json.Unmarshal(again, &resp2)
	if len(resp2.Data) != 2 || resp2.Data[0].B64PNG != resp.Data[0].B64PNG {
		t.Error("the same request gave another image")
	}

	// Raw float32: the values pipeline.Generate gives.
	code, _, body = a.post(t, `{"model": "tiny", "n": 1, "seed": 3, "sampler": "dpmpp-2m", "steps": 5, "response_format": "raw_float32_base64"}`)
	if code != http.StatusOK {
		t.Fatalf("status %d: %s", code, body)
	}
	var raw response
	json.Unmarshal(body, &raw)
	if len(raw.Data) != 1 || len(raw.Data[0].Shape) != 3 || raw.Data[0].Shape[1] != 16 {
		t.Fatalf("raw response %s", body)
	}
	so := a.f.p.DefaultSampling()
	so.Sampler, so.Spacing, so.Steps = sampler.DPMPP2M, "", 5
	want := generate(t, a.f.p, 1, pipeline.GenerateOptions{Seed: 3, Sampling: so})
	if d := maxDiff(decodeFloats(t, raw.Data[0].B64Float32), want.Pixels); d > 1e-5 {
		t.Errorf("raw values differ from pipeline.Generate's by %g", d)
	}
}

// The raw formats: a PNG (a grid for n > 1) and a .npy array, the seed in
// a header.
func TestHTTPRawFormats(t *testing.T) {
	a := newAPI(t, serve.Options{}, serve.HandlerOptions{})
	code, hdr, body := a.post(t, `{"n": 1, "seed": 5, "steps": 3, "response_format": "png"}`)
	if code != 200 || hdr.Get("Content-Type") != "image/png" || hdr.Get("X-Ddpm-Seed") != "5" {
		t.Fatalf("png: %d %v %s", code, hdr, body[:min(len(body), 200)])
	}
	img, err := png.Decode(bytes.NewReader(body))
	if err != nil || img.Bounds().Dx() != 16 {
		t.Fatalf("png body: %v", err)
	}
	// Five images: a grid of 3 columns and 2 rows, 2 pixels apart.
	code, _, body = a.post(t, `{"n": 5, "seed": 5, "steps": 3, "response_format": "png"}`)
	if code != 200 {
		t.Fatalf("png grid: %d %s", code, body)
	}
	img, err = png.Decode(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	grid, _ := generate(t, a.f.p, 5, pipeline.GenerateOptions{Seed: 5, Sampling: withSteps(a.f.p, 3)}).Grid(3, 2)
	if img.Bounds() != grid.Bounds() {
		t.Errorf("grid %v, want %v", img.Bounds(), grid.Bounds())
	}

	code, hdr, body = a.post(t, `{"n": 2, "seed": 9, "steps": 3, "response_format": "npy"}`)
	if code != 200 || hdr.Get("Content-Type") != "application/x-npy" || hdr.Get("X-Ddpm-Images") != "2" {
		t.Fatalf("npy: %d %v", code, hdr)
	}
	hlen := int(binary.LittleEndian.Uint16(body[8:10]))
	header := string(body[10 : 10+hlen])
	if !strings.HasPrefix(string(body), "\x93NUMPY") || !strings.Contains(header, "'descr': '<f4'") || !strings.Contains(header, "'shape': (2, 1, 16, 16)") {
		t.Fatalf("npy header %q", header)
	}
	data := body[10+hlen:]
	got := make([]float32, len(data)/4)
	for i := range got {
		got[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:]))
	}
	want := generate(t, a.f.p, 2, pipeline.GenerateOptions{Seed: 9, Sampling: withSteps(a.f.p, 3)})
	if d := maxDiff(got, want.Pixels); d > 1e-5 {
		t.Errorf("npy values differ from pipeline.Generate's by %g", d)
	}
}

func withSteps(p *pipeline.Pipeline, steps int) sampler.Options {
	so := p.DefaultSampling()
	so.Steps = steps
	return so
}

func TestHTTPEndpoints(t *testing.T) {
	a := newAPI(t, serve.Options{}, serve.HandlerOptions{})
	get := func(path string) (int, string) {
		code, _, b := a.do(t, http.MethodGet, path, "")
		return code, string(b)
	}
	if code, body := get("/v1/models"); code != 200 || !strings.Contains(body, `"id":"tiny"`) || !strings.Contains(body, `"num_classes":2`) || !strings.Contains(body, `"workers":1`) ||
		!strings.Contains(body, `"default_sampler":"dpmpp-2m","default_steps":20,`) {
		t.Errorf("models: %d %s", code, body)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Errorf("healthz %d", code)
	}
	if code, _ := get("/readyz"); code != 200 {
		t.Errorf("readyz %d", code)
	}
	if code, body := get("/v1/images/generations"); code != 405 || !strings.Contains(body, "method_not_allowed") {
		t.Errorf("GET generations: %d %s", code, body)
	}
	if code, body := get("/nope"); code != 404 || !strings.Contains(body, `"code":"not_found"`) {
		t.Errorf("unknown path: %d %s", code, body)
	}
	a.h.Drain()
	if code, body := get("/readyz"); code != 503 || !strings.Contains(body, "shutting_down") {
		t.Errorf("readyz while draining: %d %s", code, body)
	}
	if code, _, body := a.post(t, `{"steps": 2}`); code != 503 {
		t.Errorf("generation while draining: %d %s", code, body)
	}
}

func TestHTTPBadRequests(t *testing.T) {
	a := newAPI(t, serve.Options{MaxImages: 8}, serve.HandlerOptions{MaxBodyBytes: 1024})
	for _, c := range []struct {
		body   string
		status int
		code   string
		msg    string
	}{
		{`{"n": 1`, 400, "invalid_json", "not a valid request"},
		{``, 400, "invalid_json", "not a valid request"},
		{`[1, 2]`, 400, "invalid_json", "cannot unmarshal"},
		{`{"n": 1, "size": 3}`, 400, "invalid_json", `unknown field "size"`},
		{`{"n": 1} {"n": 2}`, 400, "invalid_json", "more than one JSON value"},
		{`{"n": "two"}`, 400, "invalid_json", "cannot unmarshal"},
		{`{"n": 1e400}`, 400, "invalid_json", "cannot unmarshal"},
		{`{"seed": -1}`, 400, "invalid_json", "cannot unmarshal"},
		{`{"n": 1000}`, 400, "invalid_request", "n 1000 out of range [1, 8]"},
		{`{"n": 0}`, 400, "invalid_request", "n 0 out of range"},
		{`{"n": -5}`, 400, "invalid_request", "n -5 out of range"},
		{`{"steps": 51}`, 400, "invalid_request", "steps 51 out of range [1, 50]"},
		{`{"steps": -1}`, 400, "invalid_request", "steps -1 out of range"},
		{`{"sampler": "euler"}`, 400, "invalid_request", "unknown sampler"},
		{`{"spacing": "odd"}`, 400, "invalid_request", "timestep spacing"},
		{`{"eta": 3}`, 400, "invalid_request", "eta 3 out of range"},
		{`{"eta": 0.5, "sampler": "dpmpp-2m"}`, 400, "invalid_request", "eta 0.5 is DDIM's, and the sampler is dpmpp-2m"},
		{`{"class": 2}`, 400, "invalid_request", "class 2 out of range [0, 2)"},
		{`{"class": -2}`, 400, "invalid_request", "class -2 out of range"},
		{`{"guidance": 3}`, 400, "invalid_request", "guidance needs a class"},
		{`{"guidance": -1, "class": 0}`, 400, "invalid_request", "guidance -1 must be >= 0"},
		{`{"guidance": 1000, "class": 0}`, 400, "invalid_request", "guidance 1000 above the limit"},
		{`{"response_format": "jpeg"}`, 400, "invalid_request", "response_format"},
		{`{"response_format": "png", "stream": true}`, 400, "invalid_request", "stream needs a JSON response_format"},
		{`{"model": "big"}`, 404, "unknown_model", `model "big" is not served`},
		{`{"seed": 1, "pad": "` + strings.Repeat("x", 2000) + `"}`, 413, "request_too_large", "exceeds 1024 bytes"},
		{`{"seed": 1}` + strings.Repeat(" ", 2000), 413, "request_too_large", "exceeds 1024 bytes"},
		{`{"seed": 1} ]`, 400, "invalid_json", "invalid character"},
	} {
		status, _, body := a.post(t, c.body)
		var e apiError
		if err := json.Unmarshal(body, &e); err != nil || status != c.status || e.Error.Code != c.code || !strings.Contains(e.Error.Message, c.msg) {
			short := c.body[:min(len(c.body), 60)]
			t.Errorf("%s: %d %s, want %d %s with %q", short, status, body, c.status, c.code, c.msg)
		}
	}
	// The server still serves.
	if status, _, body := a.post(t, `{"steps": 2}`); status != 200 {
		t.Errorf("after bad requests: %d %s", status, body)
	}
}

func TestHTTPQueueFull(t *testing.T) {
	a := newAPI(t, serve.Options{QueueSize: 1, MaxBatch: 1}, serve.HandlerOptions{RetryAfter: 3})
	release := holdFirstForward(a.f.model, nil)
	defer release()
	results := make(chan int, 2)
	send := func() {
		status, _, _ := a.post(t, `{"steps": 2}`)
		results <- status
	}
	// One request in the forward, one queued: the third is refused.
	go send()
	waitFor(t, func() bool { return a.e.Stats().ActiveRequests == 1 })
	go send()
	waitFor(t, func() bool { return a.e.Stats().Queued == 1 })
	status, hdr, body := a.post(t, `{"steps": 2}`)
	if status != http.StatusTooManyRequests || hdr.Get("Retry-After") != "3" || !strings.Contains(string(body), `"code":"queue_full"`) {
		t.Errorf("full queue: %d %v %s, want 429 with Retry-After 3 and queue_full", status, hdr, body)
	}
	release()
	for range 2 {
		if s := <-results; s != 200 {
			t.Errorf("queued request: %d", s)
		}
	}
}

func TestHTTPToken(t *testing.T) {
	a := newAPI(t, serve.Options{}, serve.HandlerOptions{Token: "s3cret"})
	for _, auth := range []string{"", "Bearer wrong", "s3cret", "Basic s3cret", "Bearer  s3cret", "Bearer s3cret2"} {
		a.header.Set("Authorization", auth)
		for _, path := range []string{"/v1/models", "/metrics"} {
			code, hdr, body := a.do(t, http.MethodGet, path, "")
			if code != 401 || !strings.Contains(string(body), `"code":"unauthorized"`) || !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("%s with %q: %d %s", path, auth, code, body)
			}
		}
		if code, _, body := a.post(t, `{"steps": 2}`); code != 401 {
			t.Errorf("generation with %q: %d %s", auth, code, body)
		}
		// Probes need no token.
		if code, _, _ := a.do(t, http.MethodGet, "/healthz", ""); code != 200 {
			t.Errorf("healthz with %q: %d", auth, code)
		}
	}
	for _, auth := range []string{"Bearer s3cret", "bearer s3cret"} {
		a.header.Set("Authorization", auth)
		if code, _, body := a.post(t, `{"steps": 2}`); code != 200 {
			t.Errorf("with %q: %d %s", auth, code, body)
		}
	}
}

// event is one server-sent event.
type event struct{ name, data string }

func readEvents(t *testing.T, r io.Reader, each func(event) bool) {
	t.Helper()
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	var ev event
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			ev.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			ev.data = strings.TrimPrefix(line, "data: ")
		case line == "":
			if !each(ev) {
				return
			}
			ev = event{}
		}
	}
}

// A streamed request sends its progress, step by step, then the result the
// same request gives without streaming.
func TestHTTPStream(t *testing.T) {
	a := newAPI(t, serve.Options{}, serve.HandlerOptions{})
	// Three images in one batch: 6 steps.
	resp, err := http.Post(a.srv.URL+"/v1/images/generations", "application/json",
		strings.NewReader(`{"n": 3, "seed": 11, "steps": 6, "class": 0, "stream": true}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream: %d %v", resp.StatusCode, resp.Header)
	}
	last, steps := 0, 0
	var result response
	readEvents(t, resp.Body, func(ev event) bool {
		switch ev.name {
		case "progress":
			var p struct{ Step, Steps, Images int }
			if err := json.Unmarshal([]byte(ev.data), &p); err != nil {
				t.Fatal(err)
			}
			if p.Step <= last || p.Step > p.Steps || p.Steps != 6 {
				t.Errorf("progress %+v after step %d", p, last)
			}
			last, steps = p.Step, p.Steps
		case "result":
			if err := json.Unmarshal([]byte(ev.data), &result); err != nil {
				t.Fatal(err)
			}
			return false
		default:
			t.Fatalf("event %q: %s", ev.name, ev.data)
		}
		return true
	})
	if last != steps || last != 6 {
		t.Errorf("last progress %d of %d, want 6 of 6", last, steps)
	}
	_, _, body := a.post(t, `{"n": 3, "seed": 11, "steps": 6, "class": 0}`)
	var plain response
	json.Unmarshal(body, &plain)
	if len(result.Data) != 3 || len(plain.Data) != 3 || result.Data[2].B64PNG != plain.Data[2].B64PNG {
		t.Errorf("streamed result differs from the plain one")
	}
}

// preview_every adds the predicted x_0 of the batch, as PNGs, to the
// progress events of the steps it picks (never the last), in step order.
func TestHTTPStreamPreview(t *testing.T) {
	a := newAPI(t, serve.Options{}, serve.HandlerOptions{})
	// Slow forwards, so that the client reads each event before the next.
	a.f.model.setHook(func(int, int64) { time.Sleep(20 * time.Millisecond) })
	resp, err := http.Post(a.srv.URL+"/v1/images/generations", "application/json",
		strings.NewReader(`{"n": 2, "seed": 4, "steps": 6, "sampler": "ddim", "class": 1, "stream": true, "preview_every": 2}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("stream: %d", resp.StatusCode)
	}
	last := 0
	var previewed []int
	readEvents(t, resp.Body, func(ev event) bool {
		if ev.name != "progress" {
			return ev.name != "result"
		}
		var p struct {
			Step, Images int
			Preview      []string
		}
		if err := json.Unmarshal([]byte(ev.data), &p); err != nil {
			t.Fatal(err)
		}
		if p.Step <= last {
			t.Errorf("step %d after %d", p.Step, last)
		}
		last = p.Step
		if p.Preview == nil {
			return true
		}
		previewed = append(previewed, p.Step)
		if len(p.Preview) != 2 || p.Images != 0 {
			t.Errorf("step %d: %d previews of images from %d, want 2 from 0", p.Step, len(p.Preview), p.Images)
		}
		for _, b64 := range p.Preview {
			b, err := base64.StdEncoding.DecodeString(b64)
			if err != nil {
				t.Fatal(err)
			}
			if img, err := png.Decode(bytes.NewReader(b)); err != nil || img.Bounds().Dx() != 16 {
				t.Errorf("step %d: a preview that is no 16x16 PNG: %v", p.Step, err)
			}
		}
		return true
	})
	if last != 6 || !slices.Equal(previewed, []int{2, 4}) {
		t.Errorf("last step %d, previews at steps %v; want 6 and [2 4]", last, previewed)
	}
	for body, want := range map[string]string{
		`{"steps": 4, "preview_every": 2}`:                  "preview_every needs stream: true",
		`{"steps": 4, "stream": true, "preview_every": -1}`: "preview_every -1",
	} {
		code, _, b := a.post(t, body)
		var e apiError
		json.Unmarshal(b, &e)
		if code != 400 || e.Error.Code != "invalid_request" || !strings.Contains(e.Error.Message, want) {
			t.Errorf("%s: %d %s", body, code, b)
		}
	}
}

// A client that leaves mid-stream: its slots leave the batch, the others
// finish, nothing leaks (newAPI's cleanup counts the tensors).
func TestHTTPClientLeaves(t *testing.T) {
	a := newAPI(t, serve.Options{}, serve.HandlerOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, a.srv.URL+"/v1/images/generations",
		strings.NewReader(`{"n": 2, "steps": 40, "stream": true}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	other := make(chan int, 1)
	readEvents(t, resp.Body, func(ev event) bool {
		if ev.name != "progress" {
			t.Fatalf("event %q before leaving", ev.name)
		}
		go func() { code, _, _ := a.post(t, `{"steps": 5}`); other <- code }()
		return false
	})
	cancel()
	resp.Body.Close()
	if code := <-other; code != 200 {
		t.Errorf("the other request: %d", code)
	}
	waitFor(t, func() bool { return a.e.Stats().Cancelled == 1 })
	if st := a.e.Stats(); st.Completed != 1 {
		t.Errorf("stats %+v", st)
	}
}

// /metrics holds every documented metric, counted right.
func TestHTTPMetrics(t *testing.T) {
	a := newAPI(t, serve.Options{}, serve.HandlerOptions{})
	a.post(t, `{"n": 2, "steps": 3}`)
	a.post(t, `{"n": 0}`)
	a.post(t, `{"bad": 1}`)
	code, _, body := a.do(t, http.MethodGet, "/metrics", "")
	if code != 200 {
		t.Fatalf("metrics: %d", code)
	}
	text := string(body)
	for _, want := range []string{
		`ddpm_serve_requests_total{model="tiny",outcome="completed"} 1`,
		`ddpm_serve_requests_total{model="tiny",outcome="invalid"} 1`,
		`ddpm_serve_images_total{model="tiny"} 2`,
		`ddpm_serve_batch_rows_count{model="tiny"} 3`,
		`ddpm_serve_batch_rows_sum{model="tiny"} 6`,
		`ddpm_serve_step_seconds_count{model="tiny"} 3`,
		`ddpm_serve_request_seconds_count{model="tiny",outcome="completed"} 1`,
		`ddpm_serve_queue_depth{model="tiny"} 0`,
		`ddpm_serve_active_slots{model="tiny"} 0`,
		`ddpm_serve_http_errors_total{code="invalid_json"} 1`,
		`ddpm_serve_http_errors_total{code="invalid_request"} 1`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	// The process's memory, as torch reports it: tensors in use (the model's
	// weights at least) and the forms derived from them (the tiny preset's
	// 3x3 convolutions' Winograd transforms, where the CPU has the kernel).
	cache, err := torch.CPUCache()
	if err != nil {
		t.Fatal(err)
	}
	weights, err := torch.WeightCache()
	if err != nil {
		t.Fatal(err)
	}
	gauges := map[string]int64{`ddpm_cpu_tensor_bytes{state="in_use"}`: cache.InUseBytes}
	if torch.WinogradConvSupported() {
		gauges["ddpm_weight_cache_bytes"] = weights.Bytes
	}
	for name, want := range gauges {
		i := strings.Index(text, "\n"+name+" ")
		if i < 0 {
			t.Errorf("metrics lack %s", name)
			continue
		}
		var got float64
		if _, err := fmt.Sscan(text[i+len(name)+2:], &got); err != nil || !(got > 0) || !(want > 0) {
			t.Errorf("%s %g (%v), torch reports %d; want both above 0", name, got, err, want)
		}
	}
}

func TestNewHandlerErrors(t *testing.T) {
	f := tinyPipeline(t, 0)
	e, err := serve.New(f.p, serve.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	for _, c := range []struct {
		models []serve.Model
		o      serve.HandlerOptions
		msg    string
	}{
		{nil, serve.HandlerOptions{}, "no models"},
		{[]serve.Model{{Name: "a"}}, serve.HandlerOptions{}, "has no engine"},
		{[]serve.Model{{Name: "a b", Engine: e}}, serve.HandlerOptions{}, "without spaces"},
		{[]serve.Model{{Name: "a", Engine: e}, {Name: "a", Engine: e}}, serve.HandlerOptions{}, "given twice"},
		{[]serve.Model{{Name: "a", Engine: e}}, serve.HandlerOptions{MaxBodyBytes: -1}, "non-negative"},
	} {
		if _, err := serve.NewHandler(c.models, c.o); err == nil || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%v: %v, want %q", c.models, err, c.msg)
		}
	}
	// Two engines may not share a name in one Metrics.
	m, _ := serve.NewMetrics(prometheus.NewRegistry())
	e1, err := serve.New(f.p, serve.Options{Metrics: m, Name: "x"})
	if err != nil {
		t.Fatal(err)
	}
	defer e1.Close()
	if _, err := serve.New(f.p, serve.Options{Metrics: m, Name: "x"}); err == nil || !strings.Contains(err.Error(), "already registered") {
		t.Errorf("second engine named x: %v", err)
	}
}

// While Handler.Warmup runs, /readyz answers 503 warming_up and /healthz
// 200; once it returns, /readyz answers 200, and report had each model's
// time.
func TestHTTPWarmup(t *testing.T) {
	a := newAPI(t, serve.Options{MaxBatch: 3}, serve.HandlerOptions{})
	inside, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	a.f.model.setHook(func(int, int64) {
		once.Do(func() {
			close(inside)
			<-release
		})
	})
	defer a.f.model.setHook(nil)
	done := make(chan error, 1)
	var reported []string
	go func() {
		done <- a.h.Warmup(context.Background(), func(model string, d time.Duration) {
			if d > 0 {
				reported = append(reported, model)
			}
		})
	}()
	<-inside
	if code, _, body := a.do(t, http.MethodGet, "/readyz", ""); code != 503 || !strings.Contains(string(body), `"warming_up"`) {
		t.Errorf("readyz while warming up: %d %s", code, body)
	}
	if code, _, _ := a.do(t, http.MethodGet, "/healthz", ""); code != 200 {
		t.Errorf("healthz while warming up: %d", code)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(reported, []string{"tiny"}) {
		t.Errorf("reported %v, want [tiny]", reported)
	}
	if code, _, body := a.do(t, http.MethodGet, "/readyz", ""); code != 200 {
		t.Errorf("readyz after warming up: %d %s", code, body)
	}
}
