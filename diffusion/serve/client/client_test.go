package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image/png"
	"math"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ddpm-go/ddpm/diffusion/sampler"
	"github.com/ddpm-go/ddpm/diffusion/serve"
	"github.com/ddpm-go/ddpm/diffusion/serve/api"
	"github.com/ddpm-go/ddpm/diffusion/serve/client"
	"github.com/ddpm-go/ddpm/internal/servetest"
)

// server is the tiny two-class test model served as "tiny" behind a
// Handler (with token, if not empty), and its engine.
func server(t *testing.T, token string) (*httptest.Server, *serve.Engine, *serve.Handler) {
	t.Helper()
	p := servetest.Pipeline(t, servetest.TinyUNet(t, 2), 2)
	e, err := serve.New(p, serve.Options{Name: "tiny"})
	if err != nil {
		t.Fatal(err)
	}
	h, err := serve.NewHandler([]serve.Model{{Name: "tiny", Engine: e}}, serve.HandlerOptions{Token: token})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		srv.Close()
		e.Close()
		p.Close()
	})
	return srv, e, h
}

func newClient(t *testing.T, url, token string) *client.Client {
	t.Helper()
	c, err := client.New(url, client.Options{Token: token})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func ptr[T any](v T) *T { return &v }

// A generation through the client carries the engine's images: float32
// exactly, PNGs as their 8-bit rounding.
func TestGenerate(t *testing.T) {
	srv, e, _ := server(t, "")
	c := newClient(t, srv.URL, "")
	ctx := context.Background()
	req := api.GenerationRequest{N: ptr(2), Seed: ptr(uint64(5)), Sampler: "ddim", Steps: 3, Class: ptr(int64(1)),
		ResponseFormat: api.FormatF32Base64}
	floats, err := c.Generate(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	// The request's sampling: the model's default with its sampler and steps.
	so := e.Pipeline().DefaultSampling()
	so.Sampler, so.Spacing, so.Steps = sampler.DDIM, "", 3
	want, err := e.Generate(ctx, serve.Request{N: 2, Seed: 5, Labels: []int64{1, 1}, Sampling: so})
	if err != nil {
		t.Fatal(err)
	}
	if floats.Model != "tiny" || floats.Seed != 5 || len(floats.Data) != 2 {
		t.Fatalf("response %s, seed %d, %d images", floats.Model, floats.Seed, len(floats.Data))
	}
	req.ResponseFormat = ""
	pngs, err := c.Generate(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range floats.Data {
		v, err := client.DecodeFloat32(d)
		if err != nil {
			t.Fatal(err)
		}
		img, err := client.DecodePNG(pngs.Data[i].B64PNG)
		if err != nil {
			t.Fatal(err)
		}
		if b := img.Bounds(); b.Dx() != 16 || b.Dy() != 16 || *d.Class != 1 {
			t.Fatalf("image %d: %v, class %d", i, b, *d.Class)
		}
		for k, x := range v {
			if x != want.Pixels[i*256+k] {
				t.Fatalf("image %d value %d: %g, the engine's %g", i, k, x, want.Pixels[i*256+k])
			}
			r, _, _, _ := img.At(k%16, k/16).RGBA()
			if d := math.Abs(float64(r>>8) - (float64(x)+1)*127.5); d > 0.51 {
				t.Fatalf("image %d pixel %d: PNG %d for value %g", i, k, r>>8, x)
			}
		}
	}
}

// GenerateRaw returns the body and the headers' seed and count.
func TestGenerateRaw(t *testing.T) {
	srv, _, _ := server(t, "")
	c := newClient(t, srv.URL, "")
	r, err := c.GenerateRaw(context.Background(), api.GenerationRequest{N: ptr(4), Seed: ptr(uint64(2)), Steps: 2, ResponseFormat: api.FormatPNG})
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(r.Body))
	if err != nil || r.ContentType != "image/png" || r.Model != "tiny" || r.Seed != 2 || r.Images != 4 {
		t.Fatalf("raw PNG: %+v, %v", r, err)
	}
	if b := img.Bounds(); b.Dx() != 2*16+3*2 {
		t.Errorf("a grid of 4 is %d wide, want two images and three 2-pixel gaps, 38", b.Dx())
	}
	r, err = c.GenerateRaw(context.Background(), api.GenerationRequest{Seed: ptr(uint64(2)), Steps: 2, ResponseFormat: api.FormatNPY})
	if err != nil || r.ContentType != "application/x-npy" || !bytes.HasPrefix(r.Body, []byte("\x93NUMPY")) || r.Images != 1 {
		t.Fatalf("raw npy: %v, %q, %d images", err, r.ContentType, r.Images)
	}
}

// Stream calls progress for each step, with the previews asked for, and
// returns the result the same request gives without streaming.
func TestStream(t *testing.T) {
	srv, _, _ := server(t, "")
	c := newClient(t, srv.URL, "")
	req := api.GenerationRequest{N: ptr(2), Seed: ptr(uint64(8)), Sampler: "ddim", Steps: 5, PreviewEvery: 2}
	var steps, previews []int
	got, err := c.Stream(context.Background(), req, func(p api.ProgressEvent) {
		steps = append(steps, p.Step)
		if p.Preview != nil {
			previews = append(previews, p.Step)
			if len(p.Preview) != 2 {
				t.Errorf("step %d: %d previews, want 2", p.Step, len(p.Preview))
			}
			if _, err := client.DecodePNG(p.Preview[0]); err != nil {
				t.Error(err)
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(steps) == 0 || steps[len(steps)-1] != 5 || len(previews) == 0 || previews[len(previews)-1] > 4 {
		t.Errorf("progress at steps %v, previews at %v: want the last step 5 and previews before it", steps, previews)
	}
	req.PreviewEvery = 0
	plain, err := c.Generate(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Data) != 2 || got.Data[1].B64PNG != plain.Data[1].B64PNG {
		t.Error("the streamed result differs from the plain one")
	}
}

// Error responses become *client.Error with the API's status, code,
// message and request ID; a request the client can tell is wrong is not
// sent.
func TestErrors(t *testing.T) {
	srv, _, h := server(t, "secret")
	ctx := context.Background()
	var e *client.Error
	_, err := newClient(t, srv.URL, "").Models(ctx)
	if !errors.As(err, &e) || e.Status != 401 || e.Code != api.CodeUnauthorized || len(e.RequestID) != 26 {
		t.Errorf("no token: %v", err)
	}
	c := newClient(t, srv.URL, "secret")
	models, err := c.Models(ctx)
	if err != nil || len(models) != 1 || models[0].ID != "tiny" || models[0].NumClasses != 2 || models[0].Size != 16 {
		t.Errorf("models: %+v, %v", models, err)
	}
	for _, c := range []struct {
		req    api.GenerationRequest
		status int
		code   string
		msg    string
	}{
		{api.GenerationRequest{N: ptr(0)}, 400, api.CodeInvalidRequest, "n 0 out of range"},
		{api.GenerationRequest{Model: "other"}, 404, api.CodeUnknownModel, `model "other" is not served`},
		{api.GenerationRequest{Class: ptr(int64(5))}, 400, api.CodeInvalidRequest, "class 5 out of range"},
	} {
		_, err := newClient(t, srv.URL, "secret").Generate(ctx, c.req)
		if !errors.As(err, &e) || e.Status != c.status || e.Code != c.code || !strings.Contains(e.Message, c.msg) {
			t.Errorf("%+v: %v, want %d %s %q", c.req, err, c.status, c.code, c.msg)
		}
	}
	for _, req := range []api.GenerationRequest{{ResponseFormat: api.FormatPNG}, {Stream: true}} {
		if _, err := c.Generate(ctx, req); err == nil || errors.As(err, &e) {
			t.Errorf("Generate(%+v) = %v: want the client's own error", req, err)
		}
	}
	if _, err := c.GenerateRaw(ctx, api.GenerationRequest{}); err == nil || errors.As(err, &e) {
		t.Errorf("GenerateRaw of a JSON format: %v", err)
	}
	if err := c.Ready(ctx); err != nil {
		t.Errorf("ready: %v", err)
	}
	h.Drain()
	if err := c.Ready(ctx); !errors.As(err, &e) || e.Status != 503 || e.Code != api.CodeShuttingDown {
		t.Errorf("ready while draining: %v", err)
	}
	if _, err := c.Generate(ctx, api.GenerationRequest{}); !errors.As(err, &e) || e.Status != 503 {
		t.Errorf("a generation while draining: %v", err)
	}
}

// A 429 carries Retry-After; a body that is not the API's keeps the status.
func TestErrorNotFromTheAPI(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "3")
		w.WriteHeader(http.StatusTooManyRequests)
		w.Write([]byte("<html>slow down</html>"))
	}))
	defer srv.Close()
	_, err := newClient(t, srv.URL, "").Generate(context.Background(), api.GenerationRequest{})
	var e *client.Error
	if !errors.As(err, &e) || e.Status != 429 || e.RetryAfter != 3*time.Second || e.Code != "" || !strings.Contains(e.Message, "429") {
		t.Errorf("a proxy's 429: %#v", err)
	}
}

// Retry-After in seconds or as an HTTP date, at most a day; 0 when
// missing or unreadable.
func TestRetryAfter(t *testing.T) {
	soon := time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat)
	for _, c := range []struct {
		header   string
		min, max time.Duration
	}{
		{"", 0, 0},
		{"0", 0, 0},
		{"120", 120 * time.Second, 120 * time.Second},
		{"99999999999", 24 * time.Hour, 24 * time.Hour},
		{"-5", 0, 0},
		{"soon", 0, 0},
		{soon, 85 * time.Second, 90 * time.Second},
		{"Mon, 01 Jan 2001 00:00:00 GMT", 0, 0},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if c.header != "" {
				w.Header().Set("Retry-After", c.header)
			}
			w.WriteHeader(http.StatusServiceUnavailable)
		}))
		_, err := newClient(t, srv.URL, "").Generate(context.Background(), api.GenerationRequest{})
		srv.Close()
		var e *client.Error
		if !errors.As(err, &e) || e.RetryAfter < c.min || e.RetryAfter > c.max {
			t.Errorf("Retry-After %q: %#v, want a wait in [%v, %v]", c.header, err, c.min, c.max)
		}
	}
}

// A result event longer than any fixed line buffer (65 MiB on one line)
// is read whole.
func TestStreamLongEvent(t *testing.T) {
	long := strings.Repeat("A", 65<<20)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprintf(w, "event: result\r\ndata: {\"created\": 1, \"data\": [{\"b64_png\": %q}]}\r\n\r\n", long)
	}))
	defer srv.Close()
	resp, err := newClient(t, srv.URL, "").Stream(context.Background(), api.GenerationRequest{}, nil)
	if err != nil || len(resp.Data) != 1 || len(resp.Data[0].B64PNG) != len(long) {
		t.Fatalf("a 65 MiB result event: %v", err)
	}
}

// Cancelling a stream's context leaves it: the server drops the request.
func TestStreamCancel(t *testing.T) {
	srv, e, _ := server(t, "")
	c := newClient(t, srv.URL, "")
	ctx, cancel := context.WithCancel(context.Background())
	_, err := c.Stream(ctx, api.GenerationRequest{N: ptr(8), Steps: 50, Sampler: "ddpm"}, func(api.ProgressEvent) { cancel() })
	if !errors.Is(err, context.Canceled) {
		t.Errorf("a cancelled stream: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for e.Stats().Cancelled != 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if st := e.Stats(); st.Cancelled != 1 || st.Completed != 0 {
		t.Errorf("the server's stats %+v: want the request cancelled", st)
	}
}

func TestNew(t *testing.T) {
	for _, u := range []string{"", "localhost:8080", "ftp://host", "http://", "://x", "http://host?x=1", "http://host/#top", "http://user:pw@host", "http://host?"} {
		if _, err := client.New(u, client.Options{}); err == nil {
			t.Errorf("New(%q) accepted", u)
		}
	}
}

// The client links no libtorch: neither package torch nor the engine.
func TestImportsNoTorch(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/ddpm-go/ddpm/diffusion/serve/client").Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasPrefix(pkg, "github.com/ddpm-go/ddpm/") && pkg != "github.com/ddpm-go/ddpm/diffusion/serve/api" &&
			pkg != "github.com/ddpm-go/ddpm/diffusion/serve/client" {
			t.Errorf("the client depends on %s", pkg)
		}
	}
}
