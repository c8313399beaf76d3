package serve

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"sync"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion/serve/api"
	"github.com/ddpm-go/ddpm/internal/servetest"
)

var (
	fuzzEngineOnce sync.Once
	fuzzEngine     *Engine
)

// engineForFuzz is an engine over the tiny test U-Net with 3 classes (T =
// 50). The fuzz target only validates requests; nothing is sampled.
func engineForFuzz(t testing.TB) *Engine {
	fuzzEngineOnce.Do(func() {
		p := servetest.Pipeline(t, servetest.TinyUNet(t, 3), 3)
		e, err := New(p, Options{MaxImages: 8, MaxSteps: 40})
		if err != nil {
			t.Fatal(err)
		}
		fuzzEngine = e
	})
	if fuzzEngine == nil {
		t.Fatal("no engine to fuzz (its making failed before)")
	}
	return fuzzEngine
}

// A request body is decoded, parsed and validated as the handler does it
// without a panic; what is accepted respects the engine's limits and the
// model's classes.
func FuzzParseGenerationRequest(f *testing.F) {
	for _, s := range []string{
		`{}`,
		`{"n": 4, "seed": 1, "steps": 20, "response_format": "png"}`,
		`{"sampler": "dpmpp-2m", "spacing": "karras", "steps": 50, "class": 2, "guidance": 3}`,
		`{"sampler": "ddim", "eta": 0.5, "class": -1, "stream": true}`,
		`{"n": -1, "guidance": -2, "eta": 2}`,
		`{"n": 1e9, "steps": 99999999999}`,
		`{"model": "x", "unknown": 1}`,
		`{"class": 9223372036854775807, "n": 3}`,
		`{"stream": true, "preview_every": 3, "steps": 6}`,
		`{"preview_every": -5}`,
	} {
		f.Add([]byte(s))
	}
	e := engineForFuzz(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		var req api.GenerationRequest
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if dec.Decode(&req) != nil {
			return
		}
		if _, err := dec.Token(); err != io.EOF {
			return
		}
		r, format, err := parseRequest(req, e.Pipeline())
		if err != nil {
			return
		}
		if format == "" {
			t.Fatal("accepted with no response format")
		}
		if r.PreviewEvery < 0 || r.PreviewEvery > 0 && !req.Stream {
			t.Fatalf("accepted preview_every %d with stream %v", r.PreviewEvery, req.Stream)
		}
		j, err := e.prepare(r)
		if err != nil {
			if !errors.Is(err, ErrInvalidRequest) {
				t.Fatalf("prepare failed without ErrInvalidRequest: %v", err)
			}
			return
		}
		switch {
		case j.n < 1 || j.n > 8:
			t.Fatalf("accepted n = %d outside [1, 8]", j.n)
		case j.steps < 1 || j.steps > 40:
			t.Fatalf("accepted %d steps outside [1, 40]", j.steps)
		case j.batch < 1 || j.batch > j.n:
			t.Fatalf("accepted batch %d for %d images", j.batch, j.n)
		case len(j.modelLabels) != j.n:
			t.Fatalf("%d model labels for %d images", len(j.modelLabels), j.n)
		}
		for _, l := range j.modelLabels {
			if l < 0 || l > 3 {
				t.Fatalf("model label %d outside [0, 3]", l)
			}
		}
	})
}
