package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"image/png"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/diffusion/pipeline"
	"github.com/ddpm-go/ddpm/diffusion/sampler"
	"github.com/ddpm-go/ddpm/diffusion/serve"
	"github.com/ddpm-go/ddpm/diffusion/unet"
	"github.com/ddpm-go/ddpm/torch"
)

// gateModel holds each forward until the gate lets it through (nil gate:
// never), so a test can fill the queue.
type gateModel struct {
	m    diffusion.Model
	mu   sync.Mutex
	gate chan struct{}
}

func (g *gateModel) Forward(s *torch.Scope, x, t, labels *torch.Tensor) *torch.Tensor {
	g.mu.Lock()
	gate := g.gate
	g.mu.Unlock()
	if gate != nil {
		<-gate
	}
	return g.m.Forward(s, x, t, labels)
}

// testServer serves the tiny preset (random weights, 2 classes, T = 50)
// as model "tiny" through an engine with opts.
func testServer(t *testing.T, opts serve.Options) (*httptest.Server, *serveHandler, *gateModel, *pipeline.Pipeline) {
	t.Helper()
	cfg, _ := unet.Preset("tiny")
	cfg.NumClasses = 2
	u, err := unet.New(cfg, torch.CPU, torch.Float32, nil)
	if err != nil {
		t.Fatal(err)
	}
	sched, _ := diffusion.NewSchedule(diffusion.ScheduleConfig{T: 50})
	g := &gateModel{m: u}
	p, err := pipeline.New(g, sched, pipeline.Info{Channels: 1, Size: 16, NumClasses: 2, ClassNames: []string{"a", "b"}}, pipeline.Options{})
	if err != nil {
		t.Fatal(err)
	}
	e, err := serve.New(p, opts)
	if err != nil {
		t.Fatal(err)
	}
	h := newServeHandler([]*servedModel{{name: "tiny", p: p, engine: e}})
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		srv.Close()
		e.Close()
		u.Close()
	})
	return srv, h, g, p
}

func post(t *testing.T, url, body string) (int, http.Header, []byte) {
	t.Helper()
	resp, err := http.Post(url+"/v1/images/generations", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

func TestServeGenerate(t *testing.T) {
	srv, _, _, p := testServer(t, serve.Options{})
	code, _, body := post(t, srv.URL, `{"n": 2, "seed": 7, "sampler": "ddim", "steps": 4, "class": 1, "guidance": 2}`)
	if code != http.StatusOK {
		t.Fatalf("status %d: %s", code, body)
	}
	var resp generationResponse
	if err := json.Unmarshal(body, &resp); err != nil {
		t.Fatal(err)
	}
	if resp.Model != "tiny" || resp.Seed != 7 || len(resp.Data) != 2 || resp.Data[1].Class == nil || *resp.Data[1].Class != 1 {
		t.Fatalf("response %+v", resp)
	}
	b, err := base64.StdEncoding.DecodeString(resp.Data[0].B64PNG)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil || img.Bounds().Dx() != 16 || img.Bounds().Dy() != 16 {
		t.Fatalf("PNG: %v, %v", err, img)
	}
	// The same request gives the same PNG.
	_, _, again := post(t, srv.URL, `{"n": 2, "seed": 7, "sampler": "ddim", "steps": 4, "class": 1, "guidance": 2}`)
	var resp2 generationResponse
	json.Unmarshal(again, &resp2)
	if len(resp2.Data) != 2 || resp2.Data[0].B64PNG != resp.Data[0].B64PNG {
		t.Error("the same request gave another image")
	}

	// Raw float32: the values pipeline.Generate gives.
	code, _, body = post(t, srv.URL, `{"model": "tiny", "n": 1, "seed": 3, "sampler": "dpmpp-2m", "steps": 5, "response_format": "raw_float32_base64"}`)
	if code != http.StatusOK {
		t.Fatalf("status %d: %s", code, body)
	}
	var raw generationResponse
	json.Unmarshal(body, &raw)
	if len(raw.Data) != 1 || len(raw.Data[0].Shape) != 3 || raw.Data[0].Shape[1] != 16 {
		t.Fatalf("raw response %s", body)
	}
	b, _ = base64.StdEncoding.DecodeString(raw.Data[0].B64Float32)
	so := p.DefaultSampling()
	so.Sampler, so.Spacing, so.Steps = sampler.DPMPP2M, "", 5
	want, err := p.Generate(context.Background(), 1, pipeline.GenerateOptions{Seed: 3, Sampling: so})
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != 4*len(want.Pixels) {
		t.Fatalf("%d bytes for %d values", len(b), len(want.Pixels))
	}
	worst := 0.0
	for i, w := range want.Pixels {
		worst = max(worst, math.Abs(float64(math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))-w)))
	}
	if worst > 1e-5 {
		t.Errorf("raw values differ from pipeline.Generate's by %g", worst)
	}
}

func TestServeEndpoints(t *testing.T) {
	srv, h, _, _ := testServer(t, serve.Options{})
	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/v1/models"); code != 200 || !strings.Contains(body, `"id":"tiny"`) || !strings.Contains(body, `"num_classes":2`) {
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
	h.draining.Store(true)
	if code, body := get("/readyz"); code != 503 || !strings.Contains(body, "shutting_down") {
		t.Errorf("readyz while draining: %d %s", code, body)
	}
	if code, _, body := post(t, srv.URL, `{"steps": 2}`); code != 503 {
		t.Errorf("generation while draining: %d %s", code, body)
	}
}

func TestServeBadRequests(t *testing.T) {
	srv, _, _, _ := testServer(t, serve.Options{MaxImages: 8})
	for _, c := range []struct {
		body   string
		status int
		code   string
		msg    string
	}{
		{`{"n": 1`, 400, "invalid_json", "not a valid request"},
		{`{"n": 1, "size": 3}`, 400, "invalid_json", `unknown field "size"`},
		{`{"n": 1} {"n": 2}`, 400, "invalid_json", "more than one JSON value"},
		{`{"n": "two"}`, 400, "invalid_json", "cannot unmarshal"},
		{`{"n": 1000}`, 400, "invalid_request", "n 1000 out of range [1, 8]"},
		{`{"n": 0}`, 400, "invalid_request", "n 0 out of range"},
		{`{"steps": 51}`, 400, "invalid_request", "steps 51 out of range [1, 50]"},
		{`{"sampler": "euler"}`, 400, "invalid_request", "unknown sampler"},
		{`{"spacing": "odd"}`, 400, "invalid_request", "timestep spacing"},
		{`{"eta": 3}`, 400, "invalid_request", "eta 3 out of range"},
		{`{"class": 2}`, 400, "invalid_request", "class 2 out of range [0, 2)"},
		{`{"guidance": 3}`, 400, "invalid_request", "guidance needs a class"},
		{`{"guidance": 1000, "class": 0}`, 400, "invalid_request", "guidance 1000 above the limit"},
		{`{"response_format": "jpeg"}`, 400, "invalid_request", "response_format"},
		{`{"model": "big"}`, 404, "unknown_model", `model "big" is not served`},
		{`{"seed": 1, "pad": "` + strings.Repeat("x", maxRequestBody) + `"}`, 413, "request_too_large", "exceeds"},
	} {
		status, _, body := post(t, srv.URL, c.body)
		var e apiError
		if err := json.Unmarshal(body, &e); err != nil || status != c.status || e.Error.Code != c.code || !strings.Contains(e.Error.Message, c.msg) {
			short := c.body[:min(len(c.body), 60)]
			t.Errorf("%s: %d %s, want %d %s with %q", short, status, body, c.status, c.code, c.msg)
		}
	}
	// The server still serves.
	if status, _, body := post(t, srv.URL, `{"steps": 2}`); status != 200 {
		t.Errorf("after bad requests: %d %s", status, body)
	}
}

func TestServeQueueFull(t *testing.T) {
	srv, h, g, _ := testServer(t, serve.Options{QueueSize: 1, MaxBatch: 1})
	e := h.models[0].engine
	gate := make(chan struct{})
	g.mu.Lock()
	g.gate = gate
	g.mu.Unlock()
	results := make(chan int, 2)
	send := func() {
		status, _, _ := post(t, srv.URL, `{"steps": 2}`)
		results <- status
	}
	// One request in the forward, one queued: the third is refused.
	go send()
	waitUntil(t, func() bool { return e.Stats().ActiveRequests == 1 })
	go send()
	waitUntil(t, func() bool { return e.Stats().Queued == 1 })
	status, hdr, body := post(t, srv.URL, `{"steps": 2}`)
	if status != http.StatusTooManyRequests || hdr.Get("Retry-After") == "" || !strings.Contains(string(body), `"code":"queue_full"`) {
		t.Errorf("full queue: %d %v %s, want 429 with Retry-After and queue_full", status, hdr, body)
	}
	close(gate)
	for range 2 {
		if s := <-results; s != 200 {
			t.Errorf("queued request: %d", s)
		}
	}
}

// waitUntil polls cond for up to 20 s.
func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 20 s")
		}
		time.Sleep(time.Millisecond)
	}
}

// A model is a checkpoint file or a run directory (its newest checkpoint).
func TestServeLoadsModels(t *testing.T) {
	runDir := tinyRun(t)
	for _, path := range []string{runDir, filepath.Join(runDir, "ckpt-00000012.safetensors")} {
		p, err := loadServedModel(path, pipeline.Options{})
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if p.Info().Step != 12 {
			t.Errorf("%s: step %d", path, p.Info().Step)
		}
		p.Close()
	}
	if _, err := loadServedModel(filepath.Join(runDir, "missing"), pipeline.Options{}); err == nil {
		t.Error("a missing path loaded")
	}
	for _, args := range [][]string{
		{"serve"},
		{"serve", "--model", "nameonly"},
		{"serve", "--model", "a=" + runDir, "--model", "a=" + runDir},
		{"serve", "--model", "a=" + runDir, "--max-batch", "0"},
	} {
		code, _, errOut := ddpm(t, args...)
		if code != 1 || strings.Count(errOut, "\n") != 1 || !strings.HasPrefix(errOut, "ddpm: serve: ") {
			t.Errorf("%v: exit %d, %q", args, code, errOut)
		}
	}
}
