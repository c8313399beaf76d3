// Package api holds the wire types of ddpm's HTTP API (package serve's
// Handler, `ddpm serve`): the JSON of requests, responses, stream events and
// errors, the error codes and the headers. It imports no cgo, so that a
// client (package client) builds without libtorch.
//
//	POST /v1/images/generations  GenerationRequest -> GenerationResponse, or with
//	                             "stream": true server-sent events: "progress"
//	                             (ProgressEvent), then "result" (GenerationResponse)
//	                             or "error" (ErrorBody); with a raw response format
//	                             the image (PNG) or array (.npy) itself
//	GET  /v1/models              ModelList
//	GET  /healthz                200 while the process serves
//	GET  /readyz                 200 while it admits requests; 503 while warming up
//	                             and once draining
//	GET  /metrics                Prometheus metrics
//
// Every error is an ErrorBody with one of the stable codes below.
package api

// GenerationRequest is the body of POST /v1/images/generations. Absent
// fields take the model's defaults (its default sampler, steps, spacing);
// unknown fields are an error.
type GenerationRequest struct {
	Model          string   `json:"model,omitempty"`           // default: the only model served
	N              *int     `json:"n,omitempty"`               // images; default 1
	Seed           *uint64  `json:"seed,omitempty"`            // default: random, returned in the response
	Sampler        string   `json:"sampler,omitempty"`         // ddpm, ddim, dpmpp-2m
	Steps          int      `json:"steps,omitempty"`           // in [1, T]
	Eta            float64  `json:"eta,omitempty"`             // DDIM's η in [0, 1]
	Spacing        string   `json:"spacing,omitempty"`         // linspace, leading, trailing, logsnr, karras, ...
	Class          *int64   `json:"class,omitempty"`           // every image's class, or -1 for none
	Guidance       *float64 `json:"guidance,omitempty"`        // classifier-free guidance weight
	ResponseFormat string   `json:"response_format,omitempty"` // one of the Format constants
	Stream         bool     `json:"stream,omitempty"`          // server-sent progress events
	PreviewEvery   int      `json:"preview_every,omitempty"`   // with Stream: x_0 previews every k steps
}

// Response formats. The JSON ones hold every image base64-encoded; the raw
// ones are the response body themselves.
const (
	FormatPNGBase64 = "png_base64"         // JSON: Data[i].B64PNG (the default)
	FormatF32Base64 = "raw_float32_base64" // JSON: Data[i].B64Float32, C×H×W little-endian float32 in [-1, 1]
	FormatPNG       = "png"                // image/png: the image, or a grid of all n
	FormatNPY       = "npy"                // application/x-npy: float32 [n, C, H, W] in [-1, 1]
)

// Formats are the response formats, the default first.
var Formats = []string{FormatPNGBase64, FormatF32Base64, FormatPNG, FormatNPY}

// JSONFormat reports whether format ("" for the default) answers with JSON,
// as a stream must, rather than with the raw image or array.
func JSONFormat(format string) bool {
	return format == "" || format == FormatPNGBase64 || format == FormatF32Base64
}

// Image is one image of a JSON response.
type Image struct {
	Index      int     `json:"index"`
	Class      *int64  `json:"class,omitempty"`
	B64PNG     string  `json:"b64_png,omitempty"`
	B64Float32 string  `json:"b64_float32,omitempty"`
	Shape      []int64 `json:"shape,omitempty"` // C, H, W of B64Float32
}

// GenerationResponse is the JSON response (and a stream's result event).
type GenerationResponse struct {
	Model   string  `json:"model"`
	Created int64   `json:"created"` // Unix seconds
	Seed    uint64  `json:"seed"`
	Data    []Image `json:"data"`
}

// ProgressEvent is the data of a stream's progress event. Preview, on the
// steps preview_every picks, holds the predicted x_0 of the batch being
// denoised as base64 PNGs: images Images, Images+1, ...
type ProgressEvent struct {
	Step    int      `json:"step"`  // denoising steps done, over all the request's batches
	Steps   int      `json:"steps"` // of this many
	Images  int      `json:"images"`
	Preview []string `json:"preview,omitempty"`
}

// ModelInfo is one entry of GET /v1/models.
type ModelInfo struct {
	ID             string   `json:"id"`
	Channels       int      `json:"channels"`
	Size           int      `json:"size"`
	NumClasses     int      `json:"num_classes"`
	ClassNames     []string `json:"class_names,omitempty"`
	Target         string   `json:"target"`
	Precision      string   `json:"precision"`
	T              int      `json:"num_train_timesteps"`
	DefaultSampler string   `json:"default_sampler"`
	DefaultSteps   int      `json:"default_steps"`
	MaxBatch       int      `json:"max_batch"`
	Workers        int      `json:"workers"`
	MaxImages      int      `json:"max_images"`
	MaxSteps       int      `json:"max_steps"`
}

// ModelList is the body of GET /v1/models.
type ModelList struct {
	Data []ModelInfo `json:"data"`
}

// ErrorBody is the body of every error response and a stream's error
// event.
type ErrorBody struct {
	Error Error `json:"error"`
}

// Error is an error's code (one of the Code constants) and message.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// The stable error codes, with the status each comes with.
const (
	CodeInvalidJSON      = "invalid_json"       // 400: the body is not one JSON request
	CodeInvalidRequest   = "invalid_request"    // 400: a field is out of range or does not fit the model
	CodeUnauthorized     = "unauthorized"       // 401: a token is required
	CodeNotFound         = "not_found"          // 404: no such endpoint
	CodeUnknownModel     = "unknown_model"      // 404: no such model
	CodeMethodNotAllowed = "method_not_allowed" // 405
	CodeTooLarge         = "request_too_large"  // 413: the body exceeds the server's limit
	CodeQueueFull        = "queue_full"         // 429: with Retry-After
	CodeInternal         = "internal_error"     // 500: the model or engine failed
	CodeShuttingDown     = "shutting_down"      // 503: draining
	CodeWarmingUp        = "warming_up"         // 503 from /readyz: the models warm up
	CodeTimeout          = "timeout"            // 504: the request ran past the server's time limit
)

// Headers.
const (
	// RequestIDHeader names a request: the client's own ID when it sends a
	// usable one (1 to 128 letters, digits and "-_.:+/="), else one the
	// server makes. Every response carries it, and the access log records
	// it.
	RequestIDHeader = "X-Request-ID"
	// A raw response's model, seed and image count.
	ModelHeader  = "X-Ddpm-Model"
	SeedHeader   = "X-Ddpm-Seed"
	ImagesHeader = "X-Ddpm-Images"
)
