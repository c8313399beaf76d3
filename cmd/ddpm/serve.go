package main

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"image/png"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/diffusion/checkpoint"
	"github.com/ddpm-go/ddpm/diffusion/pipeline"
	"github.com/ddpm-go/ddpm/diffusion/sampler"
	"github.com/ddpm-go/ddpm/diffusion/serve"
)

var serveCommand = &cli.Command{
	Name:  "serve",
	Usage: "serve models over HTTP/JSON, batching the denoising steps of concurrent requests",
	Description: `POST /v1/images/generations {"model", "n", "seed", "sampler", "steps", "eta",
"spacing", "class", "guidance", "response_format": "png_base64" | "raw_float32_base64"};
GET /v1/models, /healthz, /readyz. SIGTERM or Ctrl-C stops admitting, lets the
requests in flight finish (at most --drain-timeout) and exits.`,
	Flags: []cli.Flag{
		&cli.StringSliceFlag{Name: "model", Usage: "NAME=PATH, repeatable: a run directory, a checkpoint or a diffusers folder", EnvVars: []string{"DDPM_SERVE_MODEL"}},
		&cli.StringFlag{Name: "addr", Value: "127.0.0.1:8080", Usage: "address to listen on", EnvVars: []string{"DDPM_SERVE_ADDR"}},
		&cli.IntFlag{Name: "max-batch", Value: serve.DefaultMaxBatch, Usage: "model rows per forward (a guided image takes two)", EnvVars: []string{"DDPM_SERVE_MAX_BATCH"}},
		&cli.IntFlag{Name: "queue", Value: serve.DefaultQueueSize, Usage: "requests waiting per model before 429", EnvVars: []string{"DDPM_SERVE_QUEUE"}},
		&cli.IntFlag{Name: "max-images", Value: serve.DefaultMaxImages, Usage: "largest n of a request", EnvVars: []string{"DDPM_SERVE_MAX_IMAGES"}},
		&cli.IntFlag{Name: "max-steps", Value: serve.DefaultMaxSteps, Usage: "most sampler steps of a request", EnvVars: []string{"DDPM_SERVE_MAX_STEPS"}},
		&cli.DurationFlag{Name: "timeout", Value: 5 * time.Minute, Usage: "longest a request may wait and sample (0: no limit)", EnvVars: []string{"DDPM_SERVE_TIMEOUT"}},
		&cli.DurationFlag{Name: "drain-timeout", Value: 30 * time.Second, Usage: "longest shutdown waits for requests in flight", EnvVars: []string{"DDPM_SERVE_DRAIN_TIMEOUT"}},
		&cli.StringFlag{Name: "weights", Value: "ema", Usage: "ema or model (checkpoints)", EnvVars: []string{"DDPM_WEIGHTS"}},
		&cli.StringFlag{Name: "device", Value: "auto", Usage: "cpu, cuda, cuda:N or auto", EnvVars: []string{"DDPM_DEVICE"}},
		&cli.IntFlag{Name: "threads", Usage: "intra-op CPU threads (default: every CPU, or OMP_NUM_THREADS)", EnvVars: []string{"DDPM_THREADS"}},
	},
	Action: runServe,
}

// servedModel is one --model: its pipeline and the engine batching it.
type servedModel struct {
	name   string
	path   string
	p      *pipeline.Pipeline
	engine *serve.Engine
}

func runServe(c *cli.Context) error {
	specs := c.StringSlice("model")
	if len(specs) == 0 {
		return errors.New("serve: give at least one --model NAME=PATH")
	}
	if c.Int("max-batch") < 1 || c.Int("queue") < 1 || c.Int("max-images") < 1 || c.Int("max-steps") < 1 {
		return errors.New("serve: --max-batch, --queue, --max-images and --max-steps must be at least 1")
	}
	if c.Duration("timeout") < 0 || c.Duration("drain-timeout") < 0 {
		return errors.New("serve: --timeout and --drain-timeout must be non-negative")
	}
	w, err := checkpoint.ParseWeights(c.String("weights"))
	if err != nil {
		return fmt.Errorf("--weights: %w", err)
	}
	dev, err := setupDevice(c.String("device"), c.Int("threads"))
	if err != nil {
		return err
	}
	eo := serve.Options{MaxBatch: c.Int("max-batch"), QueueSize: c.Int("queue"), MaxImages: c.Int("max-images"),
		MaxSteps: c.Int("max-steps"), Timeout: c.Duration("timeout")}
	var models []*servedModel
	defer func() {
		for _, m := range models {
			m.engine.Close()
			m.p.Close()
		}
	}()
	for _, spec := range specs {
		name, path, ok := strings.Cut(spec, "=")
		if !ok || name == "" || path == "" || strings.ContainsAny(name, " /?#") {
			return fmt.Errorf("serve: --model %q: want NAME=PATH (a name without spaces or slashes)", spec)
		}
		if slices.ContainsFunc(models, func(m *servedModel) bool { return m.name == name }) {
			return fmt.Errorf("serve: --model %s given twice", name)
		}
		p, err := loadServedModel(path, pipeline.Options{Device: dev, Weights: w})
		if err != nil {
			return fmt.Errorf("serve: model %s: %w", name, err)
		}
		e, err := serve.New(p, eo)
		if err != nil {
			p.Close()
			return err
		}
		models = append(models, &servedModel{name: name, path: path, p: p, engine: e})
	}
	h := newServeHandler(models)

	ln, err := net.Listen("tcp", c.String("addr"))
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
	names := make([]string, len(models))
	for i, m := range models {
		names[i] = m.name
	}
	fmt.Fprintf(c.App.Writer, "ddpm serve: listening on http://%s (models: %s)\n", ln.Addr(), joinNames(names))

	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	stop()
	fmt.Fprintf(c.App.Writer, "ddpm serve: stopping: no new requests, finishing those in flight (at most %s)\n", c.Duration("drain-timeout"))
	h.draining.Store(true)
	drain, cancel := context.WithTimeout(context.Background(), c.Duration("drain-timeout"))
	defer cancel()
	// Engines first: their requests finish (or are cut at the deadline)
	// and answer, then the HTTP server's handlers return.
	for _, m := range models {
		m.engine.Shutdown(drain)
	}
	if err := srv.Shutdown(drain); err != nil {
		srv.Close()
	}
	fmt.Fprintln(c.App.Writer, "ddpm serve: stopped")
	return nil
}

// loadServedModel loads PATH: a diffusers folder (it has a scheduler
// config), a run directory (its newest checkpoint) or a checkpoint file.
func loadServedModel(path string, o pipeline.Options) (*pipeline.Pipeline, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return pipeline.Load(path, o)
	}
	for _, f := range []string{"scheduler_config.json", filepath.Join("scheduler", "scheduler_config.json")} {
		if _, err := os.Stat(filepath.Join(path, f)); err == nil {
			return pipeline.LoadDiffusers(path, o)
		}
	}
	ckpt, err := checkpoint.Latest(path)
	if err != nil {
		return nil, err
	}
	return pipeline.Load(ckpt, o)
}

// maxRequestBody bounds a generation request's JSON.
const maxRequestBody = 64 << 10

// serveHandler is the HTTP API over the engines.
type serveHandler struct {
	models   []*servedModel
	mux      *http.ServeMux
	draining atomic.Bool
}

func newServeHandler(models []*servedModel) *serveHandler {
	h := &serveHandler{models: models, mux: http.NewServeMux()}
	h.mux.HandleFunc("/v1/images/generations", h.generations)
	h.mux.HandleFunc("/v1/models", h.listModels)
	h.mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	h.mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if h.draining.Load() {
			writeError(w, http.StatusServiceUnavailable, "shutting_down", "the server is shutting down")
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
	h.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("no endpoint %s", r.URL.Path))
	})
	return h
}

func (h *serveHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// apiError is the body of every error response.
type apiError struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	var e apiError
	e.Error.Code, e.Error.Message = code, msg
	writeJSON(w, status, e)
}

// servedModelInfo is one entry of GET /v1/models.
type servedModelInfo struct {
	ID             string   `json:"id"`
	Channels       int      `json:"channels"`
	Size           int      `json:"size"`
	NumClasses     int      `json:"num_classes"`
	ClassNames     []string `json:"class_names,omitempty"`
	Target         string   `json:"target"`
	T              int      `json:"num_train_timesteps"`
	DefaultSampler string   `json:"default_sampler"`
	MaxBatch       int      `json:"max_batch"`
	MaxImages      int      `json:"max_images"`
}

func (h *serveHandler) listModels(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", "GET")
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "use GET")
		return
	}
	out := struct {
		Data []servedModelInfo `json:"data"`
	}{Data: []servedModelInfo{}}
	for _, m := range h.models {
		info, o := m.p.Info(), m.engine.Options()
		out.Data = append(out.Data, servedModelInfo{ID: m.name, Channels: info.Channels, Size: info.Size, NumClasses: info.NumClasses,
			ClassNames: info.ClassNames, Target: string(info.Target), T: m.p.Schedule().T(),
			DefaultSampler: string(m.p.DefaultSampling().Sampler), MaxBatch: o.MaxBatch, MaxImages: o.MaxImages})
	}
	writeJSON(w, http.StatusOK, out)
}

// generationRequest is the body of POST /v1/images/generations. Absent
// fields take the model's defaults.
type generationRequest struct {
	Model          string   `json:"model"`
	N              *int     `json:"n"`
	Seed           *uint64  `json:"seed"`
	Sampler        string   `json:"sampler"`
	Steps          int      `json:"steps"`
	Eta            float64  `json:"eta"`
	Spacing        string   `json:"spacing"`
	Class          *int64   `json:"class"`
	Guidance       *float64 `json:"guidance"`
	ResponseFormat string   `json:"response_format"`
}

// generatedImage is one image of a response: a PNG or C×H×W little-endian
// float32 values in [-1, 1], base64.
type generatedImage struct {
	Index      int     `json:"index"`
	Class      *int64  `json:"class,omitempty"`
	B64PNG     string  `json:"b64_png,omitempty"`
	B64Float32 string  `json:"b64_float32,omitempty"`
	Shape      []int64 `json:"shape,omitempty"`
}

type generationResponse struct {
	Model   string           `json:"model"`
	Created int64            `json:"created"`
	Seed    uint64           `json:"seed"`
	Data    []generatedImage `json:"data"`
}

const (
	formatPNG     = "png_base64"
	formatFloat32 = "raw_float32_base64"
)

func (h *serveHandler) generations(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "use POST")
		return
	}
	if h.draining.Load() {
		writeError(w, http.StatusServiceUnavailable, "shutting_down", "the server is shutting down")
		return
	}
	var req generationRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRequestBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, "request_too_large", fmt.Sprintf("the request body exceeds %d bytes", maxRequestBody))
			return
		}
		writeError(w, http.StatusBadRequest, "invalid_json", "the body is not a valid request: "+err.Error())
		return
	}
	if _, err := dec.Token(); err != io.EOF {
		writeError(w, http.StatusBadRequest, "invalid_json", "the body holds more than one JSON value")
		return
	}
	m, err := h.pick(req.Model)
	if err != nil {
		status, code := http.StatusBadRequest, "invalid_request"
		if req.Model != "" {
			status, code = http.StatusNotFound, "unknown_model"
		}
		writeError(w, status, code, err.Error())
		return
	}
	sreq, format, err := buildRequest(req, m.p)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	imgs, err := m.engine.Generate(r.Context(), sreq)
	switch {
	case err == nil:
	case errors.Is(err, serve.ErrInvalidRequest):
		writeError(w, http.StatusBadRequest, "invalid_request", strings.TrimPrefix(err.Error(), "serve: invalid request: "))
		return
	case errors.Is(err, serve.ErrQueueFull):
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusTooManyRequests, "queue_full", fmt.Sprintf("model %s has %d requests waiting; retry later", m.name, m.engine.Options().QueueSize))
		return
	case errors.Is(err, serve.ErrClosed):
		writeError(w, http.StatusServiceUnavailable, "shutting_down", "the server is shutting down")
		return
	case errors.Is(err, context.DeadlineExceeded):
		writeError(w, http.StatusGatewayTimeout, "timeout", "the request ran past the server's time limit")
		return
	case errors.Is(err, context.Canceled):
		return // the client is gone
	default:
		writeError(w, http.StatusInternalServerError, "internal_error", err.Error())
		return
	}
	resp, err := encodeImages(imgs, format)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal_error", err.Error())
		return
	}
	resp.Model, resp.Created, resp.Seed = m.name, time.Now().Unix(), sreq.Seed
	writeJSON(w, http.StatusOK, resp)
}

// pick finds the requested model; an empty name means the only one.
func (h *serveHandler) pick(name string) (*servedModel, error) {
	if name == "" {
		if len(h.models) == 1 {
			return h.models[0], nil
		}
		names := make([]string, len(h.models))
		for i, m := range h.models {
			names[i] = m.name
		}
		sort.Strings(names)
		return nil, fmt.Errorf("model: name one of %s", joinNames(names))
	}
	for _, m := range h.models {
		if m.name == name {
			return m, nil
		}
	}
	return nil, fmt.Errorf("model %q is not served (GET /v1/models lists them)", name)
}

// buildRequest turns the JSON request into the engine's, starting from the
// model's default sampling as ddpm sample does.
func buildRequest(req generationRequest, p *pipeline.Pipeline) (serve.Request, string, error) {
	var r serve.Request
	format := req.ResponseFormat
	switch format {
	case "":
		format = formatPNG
	case formatPNG, formatFloat32:
	default:
		return r, "", fmt.Errorf("response_format %q: want %s or %s", format, formatPNG, formatFloat32)
	}
	r.N = 1
	if req.N != nil {
		r.N = *req.N
	}
	if req.Seed != nil {
		r.Seed = *req.Seed
	} else {
		var b [8]byte
		crand.Read(b[:])
		r.Seed = binary.LittleEndian.Uint64(b[:])
	}
	so := p.DefaultSampling()
	if req.Sampler != "" {
		k, err := sampler.ParseKind(req.Sampler)
		if err != nil {
			return r, "", errors.New(strings.TrimPrefix(err.Error(), "sampler: "))
		}
		so.Sampler, so.Spacing = k, "" // the new sampler's default spacing
	}
	T := p.Schedule().T()
	if req.Steps != 0 && (req.Steps < 1 || req.Steps > T) {
		return r, "", fmt.Errorf("steps %d out of range [1, %d] (the model was trained with T=%d)", req.Steps, T, T)
	}
	if req.Steps != 0 {
		so.Steps = req.Steps
	}
	if req.Spacing != "" {
		sp, err := diffusion.ParseSpacing(req.Spacing)
		if err != nil {
			return r, "", errors.New(strings.TrimPrefix(err.Error(), "diffusion: "))
		}
		so.Spacing = sp
	}
	if !(req.Eta >= 0 && req.Eta <= 1) {
		return r, "", fmt.Errorf("eta %g out of range [0, 1]", req.Eta)
	}
	so.Eta = req.Eta
	if req.Guidance != nil {
		if g := *req.Guidance; math.IsNaN(g) || g < 0 {
			return r, "", fmt.Errorf("guidance %g must be >= 0", g)
		}
		so.Guidance = *req.Guidance
	}
	info := p.Info()
	if req.Class != nil {
		class := *req.Class
		switch {
		case info.NumClasses == 0:
			return r, "", errors.New("class: the model is unconditional (trained without classes)")
		case class < -1 || class >= int64(info.NumClasses):
			return r, "", fmt.Errorf("class %d out of range [0, %d) (or -1 for none)", class, info.NumClasses)
		}
		if r.N >= 1 && r.N <= 1<<16 {
			r.Labels = make([]int64, r.N)
			for i := range r.Labels {
				r.Labels[i] = class
			}
		}
	} else if so.Guidance != 0 && so.Guidance != 1 && info.NumClasses > 0 {
		return r, "", errors.New("guidance needs a class")
	}
	r.Sampling = so
	return r, format, nil
}

// encodeImages writes the images in the response format.
func encodeImages(imgs *pipeline.Images, format string) (*generationResponse, error) {
	resp := &generationResponse{Data: make([]generatedImage, imgs.N)}
	per := imgs.C * imgs.H * imgs.W
	for i := range imgs.N {
		d := generatedImage{Index: i}
		if imgs.Labels != nil {
			l := imgs.Labels[i]
			d.Class = &l
		}
		switch format {
		case formatFloat32:
			b := make([]byte, 4*per)
			for k, v := range imgs.Pixels[i*per : (i+1)*per] {
				binary.LittleEndian.PutUint32(b[4*k:], math.Float32bits(v))
			}
			d.B64Float32 = base64.StdEncoding.EncodeToString(b)
			d.Shape = []int64{int64(imgs.C), int64(imgs.H), int64(imgs.W)}
		default:
			var buf bytes.Buffer
			if err := png.Encode(&buf, imgs.Image(i)); err != nil {
				return nil, err
			}
			d.B64PNG = base64.StdEncoding.EncodeToString(buf.Bytes())
		}
		resp.Data[i] = d
	}
	return resp, nil
}
