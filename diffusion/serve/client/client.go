// Package client calls ddpm's HTTP API (`ddpm serve`, serve.Handler) from
// Go. It imports no cgo, so a service that only calls a ddpm server builds
// without libtorch. Generations come back as JSON (Generate), as the raw PNG
// or .npy body (GenerateRaw) or streamed with their progress and previews
// (Stream); an error response is an *Error with the API's status, code,
// message, Retry-After and request ID.
//
//	c, err := client.New("http://127.0.0.1:8080", client.Options{})
//	n, seed := 4, uint64(1)
//	resp, err := c.Generate(ctx, api.GenerationRequest{N: &n, Seed: &seed, Steps: 20})
//	img, err := client.DecodePNG(resp.Data[0].B64PNG)
package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/png"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/ddpm-go/ddpm/diffusion/serve/api"
)

// Options configure a Client; the zero value means the defaults.
type Options struct {
	// Token is sent as "Authorization: Bearer TOKEN" when not empty.
	Token string
	// HTTPClient sends the requests; default http.DefaultClient. Give one
	// with a Transport sized for many concurrent requests to one server.
	HTTPClient *http.Client
}

// Client calls one ddpm server. It is safe for concurrent use.
type Client struct {
	base  string
	token string
	hc    *http.Client
}

// New returns a client of the server at baseURL (http or https, with a
// host; a path is kept as the API's prefix).
func New(baseURL string, o Options) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("client: server URL %q: %w", baseURL, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("client: server URL %q: want http://HOST[:PORT] or https://...", baseURL)
	}
	if u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.User != nil {
		// The API's paths are appended to the URL: a query or fragment
		// would swallow them, and a token goes in Options.
		return nil, fmt.Errorf("client: server URL %q: want no query, fragment or user (the token goes in Options.Token)", baseURL)
	}
	hc := o.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	return &Client{base: strings.TrimSuffix(u.String(), "/"), token: o.Token, hc: hc}, nil
}

// Error is an error response of the API (or a stream's error event).
type Error struct {
	// Status is the HTTP status: 200 for a stream's error event, which
	// comes after the stream's header.
	Status int
	// Code and Message are the body's (Code one of api's Code constants).
	Code, Message string
	// RetryAfter is the response's Retry-After (a full queue's 429 has
	// one), at most a day; 0 without one.
	RetryAfter time.Duration
	// RequestID is the response's api.RequestIDHeader.
	RequestID string
}

func (e *Error) Error() string {
	return fmt.Sprintf("ddpm server: %d %s: %s (request %s)", e.Status, e.Code, e.Message, e.RequestID)
}

// Raw is a generation answered with a raw format: the PNG (one image, or
// a grid of all) or the .npy array (float32 [n, C, H, W] in [-1, 1]).
type Raw struct {
	ContentType string
	Model       string
	Seed        uint64
	Images      int
	Body        []byte
}

// Generate asks for a generation with a JSON response format (the default,
// base64 PNGs, or api.FormatF32Base64) and returns the response.
func (c *Client) Generate(ctx context.Context, req api.GenerationRequest) (*api.GenerationResponse, error) {
	if err := jsonFormat(req, false); err != nil {
		return nil, err
	}
	resp, err := c.post(ctx, req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out api.GenerationResponse
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, fmt.Errorf("client: reading the response: %w", err)
	}
	return &out, nil
}

// GenerateRaw asks for a generation with a raw response format
// (api.FormatPNG or api.FormatNPY) and returns the body and its headers.
func (c *Client) GenerateRaw(ctx context.Context, req api.GenerationRequest) (*Raw, error) {
	if req.ResponseFormat != api.FormatPNG && req.ResponseFormat != api.FormatNPY {
		return nil, fmt.Errorf("client: GenerateRaw needs response format %s or %s, not %q", api.FormatPNG, api.FormatNPY, req.ResponseFormat)
	}
	if req.Stream {
		return nil, errors.New("client: a raw response cannot stream")
	}
	resp, err := c.post(ctx, req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("client: reading the response: %w", err)
	}
	r := &Raw{ContentType: resp.Header.Get("Content-Type"), Model: resp.Header.Get(api.ModelHeader), Body: body}
	if r.Seed, err = strconv.ParseUint(resp.Header.Get(api.SeedHeader), 10, 64); err != nil {
		return nil, fmt.Errorf("client: the response's %s: %w", api.SeedHeader, err)
	}
	if r.Images, err = strconv.Atoi(resp.Header.Get(api.ImagesHeader)); err != nil {
		return nil, fmt.Errorf("client: the response's %s: %w", api.ImagesHeader, err)
	}
	return r, nil
}

// Stream asks for a generation with a JSON response format as server-sent
// events: progress is called with each progress event the server sends (the
// latest step, and its previews when req.PreviewEvery is set, if this
// client reads slower than the server steps), then the result is returned.
// Cancelling ctx leaves the stream, and the server drops the request.
func (c *Client) Stream(ctx context.Context, req api.GenerationRequest, progress func(api.ProgressEvent)) (*api.GenerationResponse, error) {
	if err := jsonFormat(req, true); err != nil {
		return nil, err
	}
	req.Stream = true
	resp, err := c.post(ctx, req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		return nil, fmt.Errorf("client: a stream answered with content type %q", ct)
	}
	// Lines of any length: the result event holds every image,
	// base64-encoded, on one line (64 float32 images of 3x256x256 are
	// 64 MiB of base64).
	br := bufio.NewReader(resp.Body)
	var name, data string
	var readErr error
	for readErr == nil {
		var line string
		line, readErr = br.ReadString('\n')
		if readErr != nil && line == "" {
			break
		}
		line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
		switch {
		case strings.HasPrefix(line, "event: "):
			name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data = strings.TrimPrefix(line, "data: ")
		case line == "":
			switch name {
			case "progress":
				var p api.ProgressEvent
				if err := json.Unmarshal([]byte(data), &p); err != nil {
					return nil, fmt.Errorf("client: a progress event: %w", err)
				}
				if progress != nil {
					progress(p)
				}
			case "result":
				var out api.GenerationResponse
				if err := json.Unmarshal([]byte(data), &out); err != nil {
					return nil, fmt.Errorf("client: the result event: %w", err)
				}
				return &out, nil
			case "error":
				var e api.ErrorBody
				if err := json.Unmarshal([]byte(data), &e); err != nil {
					return nil, fmt.Errorf("client: an error event: %w", err)
				}
				return nil, &Error{Status: resp.StatusCode, Code: e.Error.Code, Message: e.Error.Message,
					RequestID: resp.Header.Get(api.RequestIDHeader)}
			}
			name, data = "", ""
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if readErr != io.EOF {
		return nil, fmt.Errorf("client: reading the stream: %w", readErr)
	}
	return nil, errors.New("client: the stream ended without a result")
}

// Models lists the models the server serves.
func (c *Client) Models(ctx context.Context) ([]api.ModelInfo, error) {
	resp, err := c.do(ctx, http.MethodGet, "/v1/models", nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out api.ModelList
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, fmt.Errorf("client: reading the model list: %w", err)
	}
	return out.Data, nil
}

// Ready is nil when the server admits requests (GET /readyz), else its
// *Error (warming_up, shutting_down) or the transport's error.
func (c *Client) Ready(ctx context.Context) error {
	resp, err := c.do(ctx, http.MethodGet, "/readyz", nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// DecodePNG decodes an image of a JSON response (api.Image.B64PNG, or a
// preview of a progress event).
func DecodePNG(b64 string) (image.Image, error) {
	b, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, fmt.Errorf("client: base64: %w", err)
	}
	return png.Decode(bytes.NewReader(b))
}

// DecodeFloat32 decodes an image of an api.FormatF32Base64 response: its
// C×H×W values in [-1, 1].
func DecodeFloat32(img api.Image) ([]float32, error) {
	b, err := base64.StdEncoding.DecodeString(img.B64Float32)
	if err != nil {
		return nil, fmt.Errorf("client: base64: %w", err)
	}
	want := 4
	for _, d := range img.Shape {
		want *= int(d)
	}
	if len(img.Shape) != 3 || len(b) != want {
		return nil, fmt.Errorf("client: %d bytes of float32 for shape %v", len(b), img.Shape)
	}
	out := make([]float32, len(b)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return out, nil
}

// jsonFormat checks that req asks for a JSON response; streamed says
// whether the call streams.
func jsonFormat(req api.GenerationRequest, streamed bool) error {
	switch {
	case !api.JSONFormat(req.ResponseFormat):
		return fmt.Errorf("client: response format %q is raw: use GenerateRaw", req.ResponseFormat)
	case req.Stream && !streamed:
		return errors.New("client: use Stream for a streamed generation")
	}
	return nil
}

// post sends a generation.
func (c *Client) post(ctx context.Context, req api.GenerationRequest) (*http.Response, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	return c.do(ctx, http.MethodPost, "/v1/images/generations", body)
}

// do sends a request and returns a 200's response, whose body the caller
// closes; any other status becomes an *Error.
func (c *Client) do(ctx context.Context, method, path string, body []byte) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusOK {
		return resp, nil
	}
	defer resp.Body.Close()
	e := &Error{Status: resp.StatusCode, RequestID: resp.Header.Get(api.RequestIDHeader)}
	var eb api.ErrorBody
	if b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20)); err == nil && json.Unmarshal(b, &eb) == nil && eb.Error.Code != "" {
		e.Code, e.Message = eb.Error.Code, eb.Error.Message
	} else {
		e.Message = resp.Status // not the API's answer (a proxy's, say)
	}
	e.RetryAfter = retryAfter(resp.Header.Get("Retry-After"), time.Now())
	return nil, e
}

// maxRetryAfter bounds a Retry-After: a day is longer than any wait a
// caller would sleep, and the seconds of a larger one would overflow a
// Duration.
const maxRetryAfter = 24 * time.Hour

// retryAfter reads a Retry-After header: seconds, or an HTTP date (RFC
// 9110), as a wait from now in [0, maxRetryAfter]; 0 when it is missing or
// unreadable.
func retryAfter(h string, now time.Time) time.Duration {
	if h == "" {
		return 0
	}
	if s, err := strconv.ParseUint(h, 10, 64); err == nil {
		return time.Duration(min(s, uint64(maxRetryAfter/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(h); err == nil {
		return min(max(t.Sub(now), 0), maxRetryAfter)
	}
	return 0
}
