package serve

import (
	"errors"
	"time"

	"github.com/ddpm-go/ddpm/diffusion/pipeline"
	"github.com/ddpm-go/ddpm/diffusion/sampler"
)

// Default settings of Options.
const (
	// DefaultMaxBatch is the default number of model rows per forward.
	// Measured on the small preset, one denoising forward on one thread (a
	// worker's; bin/ddpm bench --threads 1): batch 1 3.9 ms, 8 16.1 ms, 16
	// 32.0 ms, 32 56.2 ms. Sixteen rows cost 2.0 ms each against 3.9 for
	// one, while a step, which every request in the forward waits for,
	// stays near 30 ms. At 64 clients, two workers of 8 rows answered
	// 43.2-45.7 images/s against 40.1-48.2 with 16 (bin/ddpm loadtest
	// --clients 64 --max-batch 8 or 16, taking turns twice): no
	// difference beyond the noise, and 16 takes a burst in fewer steps.
	// (An earlier build: batch 1 4.8-5.9 ms, 8 26-29, 16 49-52.)
	DefaultMaxBatch = 16
	// DefaultWorkers is the default number of scheduler goroutines per
	// model.
	DefaultWorkers = 1
	// DefaultQueueSize is the default number of requests waiting for
	// admission.
	DefaultQueueSize = 64
	// DefaultMaxImages is the default limit on a request's image count.
	DefaultMaxImages = 64
	// DefaultMaxSteps is the default limit on a request's sampler steps.
	DefaultMaxSteps = 1000
	// DefaultMaxGuidance is the default limit on a request's guidance
	// weight.
	DefaultMaxGuidance = 50
	// DefaultTrimEvery is how often an engine gives back the cached CPU
	// memory blocks no tensor has taken for as long.
	DefaultTrimEvery = time.Minute
)

// Options configures an Engine. The zero value means the documented
// defaults.
type Options struct {
	// MaxBatch is the most model rows one forward runs; default
	// DefaultMaxBatch. An image is one row, or two under classifier-free
	// guidance (its conditional and its null-label row).
	MaxBatch int
	// Workers is how many scheduler goroutines share the model, each
	// batching the steps of its own requests into forwards of at most
	// MaxBatch rows, so that as many forwards run at once; default
	// DefaultWorkers. A waiting request goes to a worker whose rows are
	// below its even share of all rows, running and waiting. On a CPU give
	// each worker its share of the cores
	// (torch.SetNumThreads(runtime.NumCPU()/Workers)): the intra-op
	// threads of a small model's forward mostly wait for each other, and
	// on 2 CPUs two workers of one thread each ran the small preset's
	// forwards 1.1-1.4x faster than one worker of two threads, batch 1
	// 1.7x faster (see cmd/ddpm loadtest). A GPU runs one worker's kernels
	// at a time: keep one there.
	Workers int
	// QueueSize is how many requests may wait for admission; default
	// DefaultQueueSize. Generate returns ErrQueueFull at once when the
	// queue is full.
	QueueSize int
	// MaxImages limits Request.N; default DefaultMaxImages.
	MaxImages int
	// MaxSteps limits the sampler steps of a request; default
	// DefaultMaxSteps (the schedule's T bounds them as well).
	MaxSteps int
	// MaxGuidance limits the guidance weight; default DefaultMaxGuidance.
	MaxGuidance float64
	// Timeout, if positive, bounds a request's time in the engine
	// (waiting and sampling); past it Generate returns an error wrapping
	// context.DeadlineExceeded.
	Timeout time.Duration
	// Metrics, if not nil, receives the engine's measurements under the
	// label model=Name (see NewMetrics); one Metrics serves many engines.
	Metrics *Metrics
	// Name is the engine's model name in Metrics; default "default".
	Name string
	// KeepGOMAXPROCS leaves the Go scheduler's GOMAXPROCS alone. By
	// default New raises it by Workers until the engine has stopped: a
	// worker spends nearly all its time in libtorch, and Go hands the
	// processor of a goroutine in a cgo call to other goroutines, so in a
	// busy program (an HTTP server and its clients) a worker coming back
	// from one of the hundreds of calls of a forward waited for a
	// processor. On 2 CPUs, two workers under 16 HTTP clients served
	// 22.3-22.8 images/s with GOMAXPROCS 4 against 20.1-21.0 with 2, the
	// rounds taking turns in one process (cmd/ddpm's BenchmarkGOMAXPROCS:
	// 24.0 against 21.9); the one-request-at-a-time server 5.5-5.9 against
	// 5.3-5.8.
	KeepGOMAXPROCS bool
	// TrimEvery is how often the engine gives the cached memory blocks no
	// tensor has taken for that long back to the system
	// (torch.TrimCPUCache): batches of changing sizes, and workers that
	// now and then hold more blocks of a size at once, leave blocks that
	// may not be needed again. Default DefaultTrimEvery; negative: never.
	TrimEvery time.Duration
}

func (o Options) withDefaults() Options {
	if o.MaxBatch == 0 {
		o.MaxBatch = DefaultMaxBatch
	}
	if o.Workers == 0 {
		o.Workers = DefaultWorkers
	}
	if o.QueueSize == 0 {
		o.QueueSize = DefaultQueueSize
	}
	if o.MaxImages == 0 {
		o.MaxImages = DefaultMaxImages
	}
	if o.MaxSteps == 0 {
		o.MaxSteps = DefaultMaxSteps
	}
	if o.MaxGuidance == 0 {
		o.MaxGuidance = DefaultMaxGuidance
	}
	if o.Name == "" {
		o.Name = "default"
	}
	if o.TrimEvery == 0 {
		o.TrimEvery = DefaultTrimEvery
	}
	return o
}

// Request is one call of Engine.Generate: what pipeline.Generate takes.
type Request struct {
	// N is the number of images, in [1, Options.MaxImages].
	N int
	// Seed makes the images: the same request and model give the same
	// pixels, whatever else the engine runs at the time.
	Seed uint64
	// Labels are the images' classes, as pipeline.GenerateOptions.Labels:
	// nil for unconditional samples, else N labels in [0, NumClasses) or
	// pipeline.Unconditional.
	Labels []int64
	// Sampling are the sampler settings, as
	// pipeline.GenerateOptions.Sampling: a zero Sampler selects the
	// pipeline's DefaultSampling; Target, Labels and NullLabel come from
	// the model, and Callback is not called.
	Sampling sampler.Options
	// Batch is how many of the request's images are denoised together
	// from its generator, as pipeline.GenerateOptions.Batch: the images
	// equal pipeline.Generate's with the same Batch. Default: N, or fewer
	// when N images (two rows each under guidance) exceed MaxBatch rows or
	// 64 images (pipeline.Generate's default batch); then the request's
	// batches run one after the other.
	Batch int
	// Progress, if not nil, is called after each denoising step of the
	// request, on the goroutine of the worker running it: it must return
	// at once (hand the value to a channel without blocking, say).
	Progress func(Progress)
	// PreviewEvery, if above 0, adds Progress.Preview to every
	// PreviewEvery-th step of each batch but its last (whose images are the
	// result). A preview costs the worker a copy of the batch's predicted
	// x_0 to the host, and for a latent model a decode by its autoencoder,
	// which every request sharing the worker's forwards waits for.
	PreviewEvery int
}

// Progress is how far a request has come.
type Progress struct {
	// Step is the number of denoising steps done, over all the request's
	// batches, out of Steps.
	Step, Steps int
	// Images is the number of images finished.
	Images int
	// Preview, on the steps Request.PreviewEvery picks, is the sampler's
	// prediction of the clean images of the batch being denoised (images
	// Images to Images+Preview.N-1), as pixels in [-1, 1]: after guidance
	// and clipping, decoded for a latent model. Nil on other steps.
	Preview *pipeline.Images
}

var (
	// ErrQueueFull is returned by Generate when Options.QueueSize
	// requests already wait; the caller may retry later.
	ErrQueueFull = errors.New("serve: queue full")
	// ErrClosed is returned by Generate once Close or Shutdown has been
	// called, and for requests that Close (or a Shutdown past its
	// deadline) cut short.
	ErrClosed = errors.New("serve: engine closed")
	// ErrInvalidRequest is wrapped by every error about a request's own
	// parameters (a limit, a label, a sampler option).
	ErrInvalidRequest = errors.New("invalid request")
)
