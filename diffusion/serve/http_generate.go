package serve

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"io"
	"math"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/ddpm-go/ddpm/diffusion/pipeline"
	"github.com/ddpm-go/ddpm/diffusion/serve/api"
	"github.com/ddpm-go/ddpm/internal/npy"
)

// newProgressEvent encodes p for a stream.
func newProgressEvent(p Progress) (api.ProgressEvent, error) {
	ev := api.ProgressEvent{Step: p.Step, Steps: p.Steps, Images: p.Images}
	if p.Preview == nil {
		return ev, nil
	}
	ev.Preview = make([]string, p.Preview.N)
	for i := range ev.Preview {
		var err error
		if ev.Preview[i], err = pngBase64(p.Preview.Image(i)); err != nil {
			return ev, err
		}
	}
	return ev, nil
}

// pngBase64 is img as a base64 PNG, as JSON responses and previews hold
// images.
func pngBase64(img image.Image) (string, error) {
	var buf bytes.Buffer
	if err := encodePNG(&buf, img); err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(buf.Bytes()), nil
}

func (h *Handler) generations(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		h.writeError(w, http.StatusMethodNotAllowed, api.CodeMethodNotAllowed, "use POST")
		return
	}
	if h.draining.Load() {
		h.writeError(w, http.StatusServiceUnavailable, api.CodeShuttingDown, "the server is shutting down")
		return
	}
	var req api.GenerationRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, h.opts.MaxBodyBytes))
	dec.DisallowUnknownFields()
	err := dec.Decode(&req)
	if err == nil {
		// Nothing may follow but white space, up to the size limit.
		if _, err = dec.Token(); err == nil {
			err = errors.New("the body holds more than one JSON value")
		} else if err == io.EOF {
			err = nil
		}
	}
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			h.writeError(w, http.StatusRequestEntityTooLarge, api.CodeTooLarge, fmt.Sprintf("the request body exceeds %d bytes", h.opts.MaxBodyBytes))
			return
		}
		h.writeError(w, http.StatusBadRequest, api.CodeInvalidJSON, "the body is not a valid request: "+err.Error())
		return
	}
	m, err := h.pick(req.Model)
	if err != nil {
		status, code := http.StatusBadRequest, api.CodeInvalidRequest
		if req.Model != "" {
			status, code = http.StatusNotFound, api.CodeUnknownModel
		}
		h.writeError(w, status, code, err.Error())
		return
	}
	sreq, format, err := parseRequest(req, m.Engine.Pipeline())
	if err != nil {
		h.writeError(w, http.StatusBadRequest, api.CodeInvalidRequest, err.Error())
		return
	}
	noteGeneration(w, m, sreq, req.Stream)
	if req.Stream {
		h.stream(w, r, m, sreq, format)
		return
	}
	imgs, err := m.Engine.Generate(r.Context(), sreq)
	if err != nil {
		if status, e, ok := h.failure(m, err); ok {
			h.writeError(w, status, e.Error.Code, e.Error.Message)
		}
		return
	}
	switch format {
	case api.FormatPNG, api.FormatNPY:
		h.writeRaw(w, m, sreq.Seed, imgs, format)
	default:
		resp, err := encodeJSON(imgs, format)
		if err != nil {
			h.writeError(w, http.StatusInternalServerError, api.CodeInternal, err.Error())
			return
		}
		resp.Model, resp.Created, resp.Seed = m.Name, time.Now().Unix(), sreq.Seed
		h.writeJSON(w, http.StatusOK, resp)
	}
}

// failure maps an error of Generate to its response; ok is false when the
// client is gone and nothing is to be written.
func (h *Handler) failure(m Model, err error) (status int, e api.ErrorBody, ok bool) {
	switch {
	case errors.Is(err, ErrInvalidRequest):
		return http.StatusBadRequest, newAPIError(api.CodeInvalidRequest, strings.TrimPrefix(err.Error(), "serve: invalid request: ")), true
	case errors.Is(err, ErrQueueFull):
		return http.StatusTooManyRequests, newAPIError(api.CodeQueueFull,
			fmt.Sprintf("model %s has %d requests waiting; retry later", m.Name, m.Engine.Options().QueueSize)), true
	case errors.Is(err, ErrClosed):
		return http.StatusServiceUnavailable, newAPIError(api.CodeShuttingDown, "the server is shutting down"), true
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout, newAPIError(api.CodeTimeout, "the request ran past the server's time limit"), true
	case errors.Is(err, context.Canceled):
		return 0, api.ErrorBody{}, false // the client is gone
	}
	return http.StatusInternalServerError, newAPIError(api.CodeInternal, err.Error()), true
}

// stream answers with server-sent events: "progress" after each denoising
// step (the latest only, and the latest preview, if the client reads
// slower than the engine steps),
// then "result" with the JSON response or "error". An error before the
// first step (a full queue, an invalid request) is a plain JSON error
// with its status, as without streaming.
func (h *Handler) stream(w http.ResponseWriter, r *http.Request, m Model, req Request, format string) {
	flusher, ok := w.(http.Flusher)
	if !ok {
		h.writeError(w, http.StatusInternalServerError, api.CodeInternal, "this connection cannot stream")
		return
	}
	// The engine calls Progress on a worker's goroutine, which must not
	// wait for a slow client: a mailbox that keeps the latest.
	box := newProgressBox()
	req.Progress = box.put
	type outcome struct {
		imgs *pipeline.Images
		err  error
	}
	done := make(chan outcome, 1)
	go func() {
		imgs, err := m.Engine.Generate(r.Context(), req)
		done <- outcome{imgs, err}
	}()
	started := false
	event := func(name string, v any) error {
		if !started {
			w.Header().Set("Content-Type", "text/event-stream")
			w.Header().Set("Cache-Control", "no-cache")
			w.WriteHeader(http.StatusOK)
			started = true
		}
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		h.deadline(w)
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", name, b); err != nil {
			return err
		}
		flusher.Flush()
		return nil
	}
	// streamError ends a started stream with an error event, counted and
	// logged as writeError counts and logs an error response.
	streamError := func(e api.ErrorBody) {
		h.opts.Metrics.httpError(e.Error.Code)
		noteError(w, e.Error.Code)
		event("error", e)
	}
	// sendProgress sends p; false when the stream ends: the client stopped
	// reading (the request's context ends with the handler, and its slots
	// leave the batch), or a preview could not be encoded.
	sendProgress := func(p Progress) bool {
		ev, err := newProgressEvent(p)
		if err != nil {
			streamError(newAPIError(api.CodeInternal, "preview: "+err.Error()))
			return false
		}
		if err := event("progress", ev); err != nil {
			noteError(w, codeClientClosed)
			return false
		}
		return true
	}
	sendAll := func() bool {
		for _, p := range box.take() {
			if !sendProgress(p) {
				return false
			}
		}
		return true
	}
	for {
		select {
		case <-box.ready:
			if !sendAll() {
				return
			}
		case o := <-done:
			// The last step's progress may still wait in the mailbox.
			if !sendAll() {
				return
			}
			if o.err != nil {
				status, e, ok := h.failure(m, o.err)
				switch {
				case !ok:
					noteError(w, codeClientClosed)
				case !started:
					h.writeError(w, status, e.Error.Code, e.Error.Message)
				default:
					streamError(e)
				}
				return
			}
			resp, err := encodeJSON(o.imgs, format)
			if err != nil {
				streamError(newAPIError(api.CodeInternal, err.Error()))
				return
			}
			resp.Model, resp.Created, resp.Seed = m.Name, time.Now().Unix(), req.Seed
			event("result", resp)
			return
		}
	}
}

// progressBox hands a stream's progress from the engine's worker, which
// must not wait, to the handler: the latest progress with a preview and
// the latest after it, in step order. A slow client misses steps (and
// previews, the older for the newer), never the last.
type progressBox struct {
	mu      sync.Mutex
	preview *Progress // the latest with a preview, not sent yet
	latest  *Progress // the latest after it (or after the last sent)
	ready   chan struct{}
}

func newProgressBox() *progressBox { return &progressBox{ready: make(chan struct{}, 1)} }

// put keeps p; it never blocks.
func (b *progressBox) put(p Progress) {
	b.mu.Lock()
	if p.Preview != nil {
		b.preview, b.latest = &p, nil
	} else {
		b.latest = &p
	}
	b.mu.Unlock()
	select {
	case b.ready <- struct{}{}:
	default:
	}
}

// take empties the box: the preview first, then the latest.
func (b *progressBox) take() []Progress {
	b.mu.Lock()
	defer b.mu.Unlock()
	var ps []Progress
	for _, p := range []*Progress{b.preview, b.latest} {
		if p != nil {
			ps = append(ps, *p)
		}
	}
	b.preview, b.latest = nil, nil
	return ps
}

// encodeJSON encodes the images for a JSON response.
func encodeJSON(imgs *pipeline.Images, format string) (*api.GenerationResponse, error) {
	resp := &api.GenerationResponse{Data: make([]api.Image, imgs.N)}
	per := imgs.C * imgs.H * imgs.W
	for i := range imgs.N {
		d := api.Image{Index: i}
		if imgs.Labels != nil {
			l := imgs.Labels[i]
			d.Class = &l
		}
		switch format {
		case api.FormatF32Base64:
			b := make([]byte, 4*per)
			for k, v := range imgs.Pixels[i*per : (i+1)*per] {
				binary.LittleEndian.PutUint32(b[4*k:], math.Float32bits(v))
			}
			d.B64Float32 = base64.StdEncoding.EncodeToString(b)
			d.Shape = []int64{int64(imgs.C), int64(imgs.H), int64(imgs.W)}
		default:
			var err error
			if d.B64PNG, err = pngBase64(imgs.Image(i)); err != nil {
				return nil, err
			}
		}
		resp.Data[i] = d
	}
	return resp, nil
}

// writeRaw answers with the images as the body: one PNG (a grid of
// ceil(sqrt n) columns when n > 1, 2 pixels apart) or a .npy array. The
// seed and count travel in headers.
func (h *Handler) writeRaw(w http.ResponseWriter, m Model, seed uint64, imgs *pipeline.Images, format string) {
	var buf bytes.Buffer
	var err error
	ctype := "image/png"
	switch format {
	case api.FormatNPY:
		ctype = "application/x-npy"
		err = npy.WriteFloat32(&buf, []int{imgs.N, imgs.C, imgs.H, imgs.W}, imgs.Pixels)
	default:
		img := imgs.Image(0)
		if imgs.N > 1 {
			cols := int(math.Ceil(math.Sqrt(float64(imgs.N))))
			img, err = imgs.Grid(cols, 2)
		}
		if err == nil {
			err = encodePNG(&buf, img)
		}
	}
	if err != nil {
		h.writeError(w, http.StatusInternalServerError, api.CodeInternal, err.Error())
		return
	}
	w.Header().Set("Content-Type", ctype)
	w.Header().Set(api.ModelHeader, m.Name)
	w.Header().Set(api.SeedHeader, fmt.Sprint(seed))
	w.Header().Set(api.ImagesHeader, fmt.Sprint(imgs.N))
	w.Header().Set("Content-Length", fmt.Sprint(buf.Len()))
	h.deadline(w)
	w.WriteHeader(http.StatusOK)
	w.Write(buf.Bytes())
}
