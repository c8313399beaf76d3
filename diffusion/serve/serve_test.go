package serve_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/diffusion/pipeline"
	"github.com/ddpm-go/ddpm/diffusion/sampler"
	"github.com/ddpm-go/ddpm/diffusion/serve"
	"github.com/ddpm-go/ddpm/internal/servetest"
	"github.com/ddpm-go/ddpm/torch"
)

// hookedModel calls hook (if set) before each forward with the forward's
// number (1 first) and its rows: tests hold the scheduler inside a forward
// while requests queue up, so that batching is deterministic.
type hookedModel struct {
	m     diffusion.Model
	mu    sync.Mutex
	calls int
	hook  func(call int, rows int64)
}

func (h *hookedModel) Forward(s *torch.Scope, x, t, labels *torch.Tensor) *torch.Tensor {
	h.mu.Lock()
	h.calls++
	c, f := h.calls, h.hook
	h.mu.Unlock()
	if f != nil {
		f(c, x.Shape()[0])
	}
	return h.m.Forward(s, x, t, labels)
}

func (h *hookedModel) setHook(f func(call int, rows int64)) {
	h.mu.Lock()
	h.calls, h.hook = 0, f
	h.mu.Unlock()
}

type fixture struct {
	p     *pipeline.Pipeline
	model *hookedModel
}

var (
	fixtures   = map[int]*fixture{}
	fixturesMu sync.Mutex
)

// tinyPipeline is a pipeline over the tiny preset U-Net (1×16×16, T = 50)
// with classes labels (0: unconditional), its weights random and its zero-
// initialised output layer perturbed, so that every output depends on the
// input, the timestep and the label. It lives for the whole test binary.
func tinyPipeline(t *testing.T, classes int) *fixture {
	t.Helper()
	fixturesMu.Lock()
	defer fixturesMu.Unlock()
	if f := fixtures[classes]; f != nil {
		f.model.setHook(nil)
		return f
	}
	m := &hookedModel{m: servetest.TinyUNet(t, classes)}
	p := servetest.Pipeline(t, m, classes)
	f := &fixture{p: p, model: m}
	fixtures[classes] = f
	return f
}

// checkNoLeaks fails the test unless the live tensors are back to start
// (call it after the engine is closed).
func checkNoLeaks(t *testing.T, start int64) {
	t.Helper()
	if got := torch.LiveTensors(); got != start {
		t.Errorf("live tensors %d after Close, %d before the engine: the engine leaks %d", got, start, got-start)
	}
}

// compare8 compares two sets of images as 8-bit pixels: at most 1/255 on at
// most 0.1% of the pixels. It returns the largest float difference and the
// number of pixels whose byte differs.
func compare8(t *testing.T, what string, a, b *pipeline.Images) (float64, int) {
	t.Helper()
	if a.N != b.N || len(a.Pixels) != len(b.Pixels) {
		t.Fatalf("%s: %d images (%d values) vs %d (%d)", what, a.N, len(a.Pixels), b.N, len(b.Pixels))
	}
	toByte := func(v float32) int { return int(max(0, min(255, math.Round((float64(v)+1)*127.5)))) }
	maxDiff, differ, worst := 0.0, 0, 0
	for i := range a.Pixels {
		maxDiff = max(maxDiff, math.Abs(float64(a.Pixels[i]-b.Pixels[i])))
		d := toByte(a.Pixels[i]) - toByte(b.Pixels[i])
		if d != 0 {
			differ++
			worst = max(worst, d, -d)
		}
	}
	if worst > 1 || float64(differ) > 0.001*float64(len(a.Pixels)) {
		t.Errorf("%s: %d of %d 8-bit pixels differ (largest by %d/255; float difference %g)", what, differ, len(a.Pixels), worst, maxDiff)
	}
	return maxDiff, differ
}

// requests is a mix of samplers, step counts, spacings and guidance for a
// model of two classes.
func requests() []serve.Request {
	return []serve.Request{
		{N: 2, Seed: 1, Sampling: sampler.Options{Sampler: sampler.DDPM, Steps: 6, Clip: sampler.ClipStatic}},
		{N: 3, Seed: 2, Sampling: sampler.Options{Sampler: sampler.DDIM, Steps: 5}},
		{N: 2, Seed: 3, Labels: []int64{0, 1}, Sampling: sampler.Options{Sampler: sampler.DDIM, Steps: 7, Eta: 0.5, Spacing: diffusion.SpacingTrailing}},
		{N: 2, Seed: 4, Labels: []int64{1, pipeline.Unconditional}, Sampling: sampler.Options{Sampler: sampler.DPMPP2M, Steps: 6}},
		{N: 3, Seed: 5, Labels: []int64{1, 0, 1}, Sampling: sampler.Options{Sampler: sampler.DDIM, Steps: 4, Guidance: 3}},
		{N: 2, Seed: 6, Labels: []int64{0, 0}, Sampling: sampler.Options{Sampler: sampler.DPMPP2M, Steps: 5, Guidance: 2, Clip: sampler.ClipDynamic}},
		{N: 5, Seed: 7, Batch: 2, Labels: []int64{0, 1, 0, 1, 0}, Sampling: sampler.Options{Sampler: sampler.DDPM, Steps: 4, Guidance: 1.5}},
		{N: 1, Seed: 8}, // the pipeline's default sampling (DPM-Solver++(2M), 20 steps)
	}
}

func name(r serve.Request) string {
	return fmt.Sprintf("%s-%d-steps-w%g-n%d", r.Sampling.Sampler, r.Sampling.Steps, r.Sampling.Guidance, r.N)
}

// A request alone through the engine gives pipeline.Generate's images.
func TestAloneEqualsPipeline(t *testing.T) {
	f := tinyPipeline(t, 2)
	start := torch.LiveTensors()
	e, err := serve.New(f.p, serve.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var worst float64
	for _, r := range requests() {
		t.Run(name(r), func(t *testing.T) {
			got, err := e.Generate(ctx, r)
			if err != nil {
				t.Fatal(err)
			}
			want, err := f.p.Generate(ctx, r.N, pipeline.GenerateOptions{Seed: r.Seed, Batch: r.Batch, Labels: r.Labels, Sampling: r.Sampling})
			if err != nil {
				t.Fatal(err)
			}
			d, n := compare8(t, "engine vs pipeline.Generate", got, want)
			t.Logf("largest difference %g, %d 8-bit pixels differ", d, n)
			worst = max(worst, d)
			if fmt.Sprint(got.Labels) != fmt.Sprint(want.Labels) {
				t.Errorf("labels %v, want %v", got.Labels, want.Labels)
			}
		})
	}
	t.Logf("largest difference to pipeline.Generate over every request: %g", worst)
	e.Close()
	checkNoLeaks(t, start)
}

// The same request alone and under load from concurrent requests with other
// samplers, steps and guidance gives the same 8-bit pixels, and the load
// shares forwards.
func TestUnderLoadSameImages(t *testing.T) {
	f := tinyPipeline(t, 2)
	start := torch.LiveTensors()
	e, err := serve.New(f.p, serve.Options{MaxBatch: 32})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { e.Close(); checkNoLeaks(t, start) }()
	ctx := context.Background()
	rs := requests()
	alone := make([]*pipeline.Images, len(rs))
	for i, r := range rs {
		if alone[i], err = e.Generate(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	// Hold the first forward until every request is queued: they then
	// all join at the next iteration, at different steps of their own.
	release := holdFirstForward(f.model, nil)
	defer release()
	loaded := generateHeld(t, e, rs, release, func() bool { return e.Stats().Queued == len(rs)-1 })
	f.model.setHook(nil)
	for i := range rs {
		d, n := compare8(t, name(rs[i])+" alone vs under load", alone[i], loaded[i])
		t.Logf("%s: largest difference alone vs under load %g, %d 8-bit pixels differ", name(rs[i]), d, n)
	}
	st := e.Stats()
	t.Logf("stats: %d forwards, %d shared by several requests, rows histogram %v", st.Forwards, st.SharedForwards, st.BatchRows)
	if st.SharedForwards == 0 {
		t.Error("no forward held slots of more than one request")
	}
	if st.Completed != int64(2*len(rs)) || st.Failed != 0 || st.ActiveRequests != 0 || st.Queued != 0 {
		t.Errorf("stats %+v", st)
	}
}

// holdFirstForward makes the model's next first forward wait until release
// is called (release may be called more than once: defer it, so that a
// failing test never leaves the scheduler blocked and Close waiting).
func holdFirstForward(m *hookedModel, each func(rows int64)) (release func()) {
	gate := make(chan struct{})
	var once sync.Once
	m.setHook(func(call int, rows int64) {
		if call == 1 {
			<-gate
		}
		if each != nil {
			each(rows)
		}
	})
	return func() { once.Do(func() { close(gate) }) }
}

// generateHeld sends every request of rs to e at once, request 0 first;
// its first forward is held (holdFirstForward) until ready holds, then
// release lets it go. It returns the images, failing the test on any error.
func generateHeld(t *testing.T, e *serve.Engine, rs []serve.Request, release func(), ready func() bool) []*pipeline.Images {
	t.Helper()
	got := make([]*pipeline.Images, len(rs))
	errs := make([]error, len(rs))
	var wg sync.WaitGroup
	for i, r := range rs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], errs[i] = e.Generate(context.Background(), r)
		}()
		if i == 0 {
			waitFor(t, func() bool { return e.Stats().ActiveRequests == 1 })
		}
	}
	waitFor(t, ready)
	release()
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	return got
}

// holdFirstForwardRecording is holdFirstForward that also records the rows
// of every forward, in the order they finish waiting.
func holdFirstForwardRecording(m *hookedModel) (release func(), rows func() []int64) {
	var mu sync.Mutex
	var seen []int64
	release = holdFirstForward(m, func(n int64) {
		mu.Lock()
		seen = append(seen, n)
		mu.Unlock()
	})
	return release, func() []int64 {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(seen)
	}
}

// waitFor polls cond for up to 20 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 20 s")
		}
		time.Sleep(time.Millisecond)
	}
}

// Requests join a running batch at the next iteration, up to MaxBatch rows,
// and the forwards hold several requests' slots.
func TestBatching(t *testing.T) {
	f := tinyPipeline(t, 0)
	start := torch.LiveTensors()
	e, err := serve.New(f.p, serve.Options{MaxBatch: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { e.Close(); checkNoLeaks(t, start) }()
	release, forwardRows := holdFirstForwardRecording(f.model)
	defer release()
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make([]error, 6)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = e.Generate(ctx, serve.Request{N: 2, Seed: uint64(i), Sampling: sampler.Options{Sampler: sampler.DDIM, Steps: 3 + i}})
		}()
		if i == 0 {
			waitFor(t, func() bool { return e.Stats().ActiveRequests == 1 })
		}
	}
	waitFor(t, func() bool { return e.Stats().Queued == 5 })
	release()
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	st := e.Stats()
	rows := forwardRows()
	t.Logf("rows per forward %v; stats %+v", rows, st)
	// The first forward ran request 0 alone; the next held four requests
	// (8 rows), the rest joined as those finished.
	if len(rows) < 2 || rows[0] != 2 || rows[1] != 8 {
		t.Errorf("rows per forward %v, want 2 then 8", rows)
	}
	for _, n := range rows {
		if n > 8 {
			t.Errorf("a forward of %d rows, above MaxBatch 8", n)
		}
	}
	if st.SharedForwards == 0 || st.Forwards != int64(len(rows)) || st.Images != 12 {
		t.Errorf("stats %+v", st)
	}
	// The forwards' time is part of the iterations'.
	if !(st.ForwardTime > 0 && st.ForwardTime <= st.StepTime) {
		t.Errorf("forward time %v, iteration time %v", st.ForwardTime, st.StepTime)
	}
}

// A request whose context is cancelled mid-run returns context.Canceled and
// leaves the batch at the next step; the others complete.
func TestCancelMidRun(t *testing.T) {
	f := tinyPipeline(t, 2)
	start := torch.LiveTensors()
	e, err := serve.New(f.p, serve.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { e.Close(); checkNoLeaks(t, start) }()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	var rows []int64
	running := make(chan struct{}) // closed at the long request's first forward
	f.model.setHook(func(call int, n int64) {
		mu.Lock()
		rows = append(rows, n)
		mu.Unlock()
		if call == 1 {
			close(running)
		}
		if call == 3 {
			cancel()
		}
	})
	long := serve.Request{N: 3, Seed: 9, Sampling: sampler.Options{Sampler: sampler.DDPM, Steps: 40}}
	done := make(chan error, 1)
	go func() {
		_, err := e.Generate(ctx, long)
		done <- err
	}()
	// Not Stats().ActiveRequests == 1: with fast forwards the request can
	// be cancelled and gone between two polls.
	waitFor(t, func() bool {
		select {
		case <-running:
			return true
		default:
			return false
		}
	})
	others := requests()[:3]
	errs := make([]error, len(others))
	var wg sync.WaitGroup
	for i, r := range others {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = e.Generate(context.Background(), r)
		}()
	}
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled request returned %v, want context.Canceled", err)
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("request %d: %v", i, err)
		}
	}
	mu.Lock()
	n := len(rows)
	mu.Unlock()
	if n >= 40 {
		t.Errorf("%d forwards: the cancelled request ran on", n)
	}
	st := e.Stats()
	if st.Cancelled != 1 || st.Completed != int64(len(others)) {
		t.Errorf("stats %+v", st)
	}
}

// A full queue refuses at once with ErrQueueFull; a queued request whose
// context ends leaves the queue.
func TestQueueFull(t *testing.T) {
	f := tinyPipeline(t, 0)
	start := torch.LiveTensors()
	e, err := serve.New(f.p, serve.Options{MaxBatch: 2, QueueSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { e.Close(); checkNoLeaks(t, start) }()
	release := holdFirstForward(f.model, nil)
	defer release()
	r := serve.Request{N: 2, Sampling: sampler.Options{Sampler: sampler.DDIM, Steps: 2}}
	first := make(chan error, 1)
	go func() { _, err := e.Generate(context.Background(), r); first <- err }()
	waitFor(t, func() bool { return e.Stats().ActiveRequests == 1 })
	ctx, cancel := context.WithCancel(context.Background())
	second := make(chan error, 1)
	go func() { _, err := e.Generate(ctx, r); second <- err }()
	waitFor(t, func() bool { return e.Stats().Queued == 1 })
	t0 := time.Now()
	if _, err := e.Generate(context.Background(), r); !errors.Is(err, serve.ErrQueueFull) {
		t.Fatalf("third request: %v, want ErrQueueFull", err)
	}
	if d := time.Since(t0); d > time.Second {
		t.Errorf("ErrQueueFull took %v", d)
	}
	cancel()
	if err := <-second; !errors.Is(err, context.Canceled) {
		t.Errorf("queued request cancelled: %v", err)
	}
	if q := e.Stats().Queued; q != 0 {
		t.Errorf("queue depth %d after the queued request left", q)
	}
	release()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if st := e.Stats(); st.Rejected != 1 || st.Cancelled != 1 || st.Completed != 1 {
		t.Errorf("stats %+v", st)
	}
}

// Close cancels in-flight requests with ErrClosed and refuses new ones;
// Shutdown lets them finish.
func TestCloseAndShutdown(t *testing.T) {
	f := tinyPipeline(t, 0)
	start := torch.LiveTensors()
	ctx := context.Background()
	long := serve.Request{N: 1, Sampling: sampler.Options{Sampler: sampler.DDPM, Steps: 50}}

	e, err := serve.New(f.p, serve.Options{})
	if err != nil {
		t.Fatal(err)
	}
	f.model.setHook(func(call int, _ int64) { time.Sleep(time.Millisecond) })
	res := make(chan error, 2)
	for range 2 {
		go func() { _, err := e.Generate(ctx, long); res <- err }()
	}
	waitFor(t, func() bool { return e.Stats().Forwards >= 2 })
	e.Close()
	for range 2 {
		if err := <-res; !errors.Is(err, serve.ErrClosed) {
			t.Errorf("in-flight request at Close: %v, want ErrClosed", err)
		}
	}
	if _, err := e.Generate(ctx, long); !errors.Is(err, serve.ErrClosed) {
		t.Errorf("Generate after Close: %v, want ErrClosed", err)
	}
	e.Close() // twice is fine
	checkNoLeaks(t, start)

	e, err = serve.New(f.p, serve.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		go func() { _, err := e.Generate(ctx, long); res <- err }()
	}
	waitFor(t, func() bool { return e.Stats().ActiveRequests == 2 })
	if err := e.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := <-res; err != nil {
			t.Errorf("in-flight request at Shutdown: %v", err)
		}
	}
	f.model.setHook(nil)
	checkNoLeaks(t, start)
}

// Bad requests fail at once with ErrInvalidRequest and a clear message.
func TestInvalidRequests(t *testing.T) {
	f := tinyPipeline(t, 2)
	u := tinyPipeline(t, 0)
	start := torch.LiveTensors()
	e, err := serve.New(f.p, serve.Options{MaxImages: 4, MaxSteps: 30, MaxGuidance: 10, MaxBatch: 4})
	if err != nil {
		t.Fatal(err)
	}
	eu, err := serve.New(u.p, serve.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ddim := sampler.Options{Sampler: sampler.DDIM, Steps: 3}
	for _, c := range []struct {
		e    *serve.Engine
		r    serve.Request
		want string
	}{
		{e, serve.Request{}, "n 0 out of range [1, 4]"},
		{e, serve.Request{N: 5}, "n 5 out of range"},
		{e, serve.Request{N: 1, Labels: []int64{2}, Sampling: ddim}, "label 2 of image 0 out of range [0, 2)"},
		{e, serve.Request{N: 2, Labels: []int64{1}, Sampling: ddim}, "1 labels for 2 images"},
		{e, serve.Request{N: 1, Sampling: sampler.Options{Sampler: sampler.DDIM, Guidance: 3}}, "guidance needs labels"},
		{e, serve.Request{N: 1, Labels: []int64{0}, Sampling: sampler.Options{Sampler: sampler.DDIM, Steps: 3, Guidance: 11}}, "guidance 11 above the limit 10"},
		{e, serve.Request{N: 1, Labels: []int64{0}, Sampling: sampler.Options{Sampler: sampler.DDIM, Steps: 3, Guidance: -3}}, "guidance weight -3 must be finite and >= 0"},
		{e, serve.Request{N: 1, Labels: []int64{0}, Sampling: sampler.Options{Sampler: sampler.DDIM, Steps: 3, Guidance: math.NaN()}}, "guidance weight NaN must be finite"},
		{e, serve.Request{N: 1, Sampling: sampler.Options{Sampler: sampler.DDIM, Steps: 40}}, "steps 40 above the limit 30"},
		{e, serve.Request{N: 1, Sampling: sampler.Options{Sampler: sampler.DDPM}}, "steps 50 above the limit 30"},
		{e, serve.Request{N: 1, Sampling: sampler.Options{Sampler: sampler.DDIM, Steps: 3, Eta: 2}}, "eta 2 out of range"},
		{e, serve.Request{N: 1, Sampling: sampler.Options{Sampler: "euler"}}, "unknown sampler"},
		{e, serve.Request{N: 4, Batch: 3, Labels: []int64{0, 0, 0, 0}, Sampling: sampler.Options{Sampler: sampler.DDIM, Steps: 3, Guidance: 2}}, "batch 3 out of range [1, 2]"},
		{eu, serve.Request{N: 1, Labels: []int64{0}}, "the model is unconditional"},
		{eu, serve.Request{N: 1, Sampling: sampler.Options{Sampler: sampler.DDIM, Guidance: 2}}, "needs a class-conditional model"},
		{eu, serve.Request{N: 1, Sampling: sampler.Options{Sampler: sampler.DDIM, Steps: 51}}, "steps 51 out of range [1, 50]"},
		{e, serve.Request{N: 1, Sampling: ddim, PreviewEvery: -1}, "preview every -1 steps"},
	} {
		_, err := c.e.Generate(context.Background(), c.r)
		if !errors.Is(err, serve.ErrInvalidRequest) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Generate(%+v) = %v, want ErrInvalidRequest with %q", c.r, err, c.want)
		}
	}
	e.Close()
	eu.Close()
	checkNoLeaks(t, start)
}

// Previews are the sampler's predictions of x_0 that pipeline.Generate's
// callback sees at the same steps (guided, over two batches), on the steps
// PreviewEvery picks but each batch's last; without Progress none is made.
func TestPreview(t *testing.T) {
	f := tinyPipeline(t, 2)
	start := torch.LiveTensors()
	e, err := serve.New(f.p, serve.Options{})
	if err != nil {
		t.Fatal(err)
	}
	so := sampler.Options{Sampler: sampler.DDIM, Steps: 6, Guidance: 2}
	r := serve.Request{N: 3, Seed: 9, Batch: 2, Labels: []int64{0, 1, pipeline.Unconditional}, Sampling: so, PreviewEvery: 2}
	var got []serve.Progress
	r.Progress = func(p serve.Progress) {
		if p.Preview != nil {
			got = append(got, p)
		}
	}
	if _, err := e.Generate(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	var want []*pipeline.Images
	so.Callback = func(step, total, tt int, xt, x0 *torch.Tensor) error {
		if (step+1)%2 == 0 && step+1 < total {
			pix, err := pipeline.Pixels(x0)
			if err != nil {
				return err
			}
			want = append(want, &pipeline.Images{N: int(x0.Shape()[0]), C: 1, H: 16, W: 16, Pixels: pix})
		}
		return nil
	}
	if _, err := f.p.Generate(context.Background(), 3, pipeline.GenerateOptions{Seed: 9, Batch: 2, Labels: r.Labels, Sampling: so}); err != nil {
		t.Fatal(err)
	}
	// Steps 2 and 4 of each batch of 6: images 0-1, then image 2.
	if len(got) != 4 || len(want) != 4 {
		t.Fatalf("%d previews, pipeline.Generate's callback %d; want 4", len(got), len(want))
	}
	for i, p := range got {
		if wantStep, wantImages := []int{2, 4, 8, 10}[i], []int{0, 0, 2, 2}[i]; p.Step != wantStep || p.Images != wantImages || p.Steps != 12 {
			t.Errorf("preview %d at step %d of %d, images %d; want step %d of 12, images %d", i, p.Step, p.Steps, p.Images, wantStep, wantImages)
		}
		compare8(t, fmt.Sprintf("preview %d", i), p.Preview, want[i])
		if wantLabels := r.Labels[p.Images : p.Images+p.Preview.N]; fmt.Sprint(p.Preview.Labels) != fmt.Sprint(wantLabels) {
			t.Errorf("preview %d labels %v, want %v", i, p.Preview.Labels, wantLabels)
		}
	}
	// Each step's prediction is its own: the batch's two previews differ.
	if maxDiff(got[0].Preview.Pixels, got[1].Preview.Pixels) == 0 {
		t.Error("the previews at steps 2 and 4 are the same")
	}
	r.Progress = nil
	if _, err := e.Generate(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	e.Close()
	checkNoLeaks(t, start)
}

// Options' zero value means the documented defaults; negative values are
// refused.
func TestOptions(t *testing.T) {
	f := tinyPipeline(t, 0)
	e, err := serve.New(f.p, serve.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	o := e.Options()
	if o.MaxBatch != serve.DefaultMaxBatch || o.QueueSize != serve.DefaultQueueSize || o.MaxImages != serve.DefaultMaxImages ||
		o.MaxSteps != serve.DefaultMaxSteps || o.MaxGuidance != serve.DefaultMaxGuidance || o.Timeout != 0 ||
		o.TrimEvery != serve.DefaultTrimEvery {
		t.Errorf("defaults %+v", o)
	}
	if _, err := serve.New(f.p, serve.Options{MaxBatch: -1}); err == nil {
		t.Error("MaxBatch -1 accepted")
	}
	if _, err := serve.New(nil, serve.Options{}); err == nil {
		t.Error("nil pipeline accepted")
	}
}

// The engine gives unused memory back every TrimEvery, busy or idle, and
// never with a negative TrimEvery; requests are served the same either way.
func TestTrimEvery(t *testing.T) {
	f := tinyPipeline(t, 0)
	for _, every := range []time.Duration{20 * time.Millisecond, -1} {
		e, err := serve.New(f.p, serve.Options{TrimEvery: every})
		if err != nil {
			t.Fatal(err)
		}
		for range 3 {
			if _, err := e.Generate(context.Background(), serve.Request{N: 2, Sampling: sampler.Options{Sampler: sampler.DDIM, Steps: 5}}); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(100 * time.Millisecond) // idle: trims still come
		st := e.Stats()
		e.Close()
		if every > 0 && st.Trims < 3 || every < 0 && st.Trims != 0 {
			t.Errorf("TrimEvery %v: %d trims", every, st.Trims)
		}
	}
}

// Options.Timeout bounds a request: past it Generate returns
// context.DeadlineExceeded.
func TestTimeout(t *testing.T) {
	f := tinyPipeline(t, 0)
	start := torch.LiveTensors()
	e, err := serve.New(f.p, serve.Options{Timeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	f.model.setHook(func(int, int64) { time.Sleep(5 * time.Millisecond) })
	_, err = e.Generate(context.Background(), serve.Request{N: 1, Sampling: sampler.Options{Sampler: sampler.DDPM, Steps: 50}})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Generate past Timeout: %v, want context.DeadlineExceeded", err)
	}
	e.Close()
	f.model.setHook(nil)
	checkNoLeaks(t, start)
}

// The engine runs the pipeline's precision: a bf16 pipeline's request
// alone gives what its pipeline.Generate gives, and under load from other
// requests the same 8-bit pixels.
func TestBF16(t *testing.T) {
	if err := diffusion.BF16.Check(torch.CPU); err != nil {
		t.Skip(err)
	}
	f := tinyPipeline(t, 2)
	p, err := pipeline.New(f.model, f.p.Schedule(), f.p.Info(), pipeline.Options{Precision: diffusion.BF16})
	if err != nil {
		t.Fatal(err)
	}
	start := torch.LiveTensors()
	e, err := serve.New(p, serve.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { e.Close(); checkNoLeaks(t, start) }()
	ctx := context.Background()
	r := serve.Request{N: 2, Seed: 4, Labels: []int64{0, 1}, Sampling: sampler.Options{Sampler: sampler.DDIM, Steps: 6, Guidance: 2}}
	alone, err := e.Generate(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	want, err := p.Generate(ctx, r.N, pipeline.GenerateOptions{Seed: r.Seed, Labels: r.Labels, Sampling: r.Sampling})
	if err != nil {
		t.Fatal(err)
	}
	d, n := compare8(t, "bf16 engine vs pipeline.Generate", alone, want)
	t.Logf("bf16 alone vs pipeline.Generate: largest difference %g, %d 8-bit pixels differ", d, n)
	// The request starts alone; the others join it at its second step.
	release := holdFirstForward(f.model, nil)
	defer release()
	var loaded *pipeline.Images
	done := make(chan error, 1)
	go func() {
		var err error
		loaded, err = e.Generate(ctx, r)
		done <- err
	}()
	waitFor(t, func() bool { return e.Stats().ActiveRequests == 1 })
	var wg sync.WaitGroup
	others := requests()
	for i, other := range others {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := e.Generate(ctx, other); err != nil {
				t.Errorf("other request %d: %v", i, err)
			}
		}()
	}
	waitFor(t, func() bool { return e.Stats().Queued == len(others) })
	shared := e.Stats().SharedForwards
	release()
	wg.Wait()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if e.Stats().SharedForwards == shared {
		t.Error("no forward was shared")
	}
	d, n = compare8(t, "bf16 alone vs under load", alone, loaded)
	t.Logf("bf16 alone vs under load: largest difference %g, %d 8-bit pixels differ", d, n)
}

// With two workers a second forward runs while the first is held, and every
// request still gives its images alone through a one-worker engine.
func TestWorkers(t *testing.T) {
	f := tinyPipeline(t, 2)
	start := torch.LiveTensors()
	ctx := context.Background()
	rs := requests()
	one, err := serve.New(f.p, serve.Options{})
	if err != nil {
		t.Fatal(err)
	}
	alone := make([]*pipeline.Images, len(rs))
	for i, r := range rs {
		if alone[i], err = one.Generate(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	one.Close()

	e, err := serve.New(f.p, serve.Options{MaxBatch: 8, Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { e.Close(); checkNoLeaks(t, start) }()
	release, forwardRows := holdFirstForwardRecording(f.model)
	defer release()
	// The worker holding request 0 is stuck in its forward (counted only
	// when it returns): rows counted before the release are the other
	// worker's.
	got := generateHeld(t, e, rs, release, func() bool { return e.Stats().Rows > 0 })
	f.model.setHook(nil)
	for i := range rs {
		d, n := compare8(t, name(rs[i])+" two workers vs one", alone[i], got[i])
		t.Logf("%s: largest difference two workers vs one %g, %d 8-bit pixels differ", name(rs[i]), d, n)
	}
	st := e.Stats()
	rows := forwardRows()
	t.Logf("rows per forward %v; rows per worker %v", rows, st.WorkerRows)
	if len(st.WorkerRows) != 2 || st.WorkerRows[0] == 0 || st.WorkerRows[1] == 0 || st.WorkerRows[0]+st.WorkerRows[1] != st.Rows {
		t.Errorf("rows per worker %v, %d in all", st.WorkerRows, st.Rows)
	}
	for _, n := range rows {
		if n > 8 {
			t.Errorf("a forward of %d rows, above MaxBatch 8", n)
		}
	}
	if st.Completed != int64(len(rs)) || st.Failed != 0 || st.ActiveRequests != 0 || st.ActiveRows != 0 || st.Queued != 0 {
		t.Errorf("stats %+v", st)
	}
}

// An engine adds a processor per worker to GOMAXPROCS while it runs, and
// takes them back when it has stopped (Close, or Shutdown); with
// KeepGOMAXPROCS it leaves GOMAXPROCS alone.
func TestEngineGOMAXPROCS(t *testing.T) {
	f := tinyPipeline(t, 0)
	base := runtime.GOMAXPROCS(0)
	a, err := serve.New(f.p, serve.Options{Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	if got := runtime.GOMAXPROCS(0); got != base+2 {
		t.Errorf("GOMAXPROCS %d with an engine of 2 workers, want %d", got, base+2)
	}
	b, err := serve.New(f.p, serve.Options{Workers: 3, KeepGOMAXPROCS: true})
	if err != nil {
		t.Fatal(err)
	}
	c, err := serve.New(f.p, serve.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := runtime.GOMAXPROCS(0); got != base+3 {
		t.Errorf("GOMAXPROCS %d with engines of 2, 3 (kept) and 1 workers, want %d", got, base+3)
	}
	a.Close()
	b.Close()
	if err := c.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := runtime.GOMAXPROCS(0); got != base {
		t.Errorf("GOMAXPROCS %d after the engines stopped, want %d", got, base)
	}
}

// A request of two batches, the last smaller, whose engine is closed in its
// first batch's last forward: the gauges fall back to zero (the load counts
// the slots it added, not the smaller last batch's).
func TestCloseBetweenBatches(t *testing.T) {
	f := tinyPipeline(t, 0)
	start := torch.LiveTensors()
	e, err := serve.New(f.p, serve.Options{})
	if err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{})
	f.model.setHook(func(call int, rows int64) {
		if call == 2 { // the first batch's last step
			go func() { e.Close(); close(closed) }()
			time.Sleep(50 * time.Millisecond) // Close marks the engine at once
		}
	})
	_, err = e.Generate(context.Background(), serve.Request{N: 3, Batch: 2, Sampling: sampler.Options{Sampler: sampler.DDIM, Steps: 2}})
	<-closed
	f.model.setHook(nil)
	if !errors.Is(err, serve.ErrClosed) {
		t.Errorf("Generate = %v, want ErrClosed", err)
	}
	if st := e.Stats(); st.ActiveRequests != 0 || st.ActiveSlots != 0 || st.ActiveRows != 0 || st.Failed != 1 {
		t.Errorf("after Close: %+v, want no active request, slot or row and one failed", st)
	}
	checkNoLeaks(t, start)
}

// Two workers running one row each take a waiting request of two rows at
// once: both are below their share, though the request does not fit in it.
func TestWorkersAdmitBelowShare(t *testing.T) {
	f := tinyPipeline(t, 0)
	e, err := serve.New(f.p, serve.Options{Workers: 2, KeepGOMAXPROCS: true})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	f.model.setHook(func(call int, rows int64) { time.Sleep(5 * time.Millisecond) })
	defer f.model.setHook(nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	long := serve.Request{N: 1, Sampling: sampler.Options{Sampler: sampler.DDPM, Steps: 50}}
	for i := range 2 {
		go e.Generate(ctx, long)
		waitFor(t, func() bool { return e.Stats().ActiveRequests == i+1 })
	}
	done := make(chan error, 1)
	go func() {
		_, err := e.Generate(ctx, serve.Request{N: 2, Sampling: sampler.Options{Sampler: sampler.DDIM, Steps: 2}})
		done <- err
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st := e.Stats(); st.Completed != 1 || st.ActiveRequests != 2 {
		t.Errorf("the two-row request waited for a 50-step one: %+v", st)
	}
}

// A request cancelled during its last forward gets what the stats count:
// its images, counted completed (not the cancellation, counted completed).
func TestCancelInLastForward(t *testing.T) {
	f := tinyPipeline(t, 0)
	e, err := serve.New(f.p, serve.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ctx, cancel := context.WithCancel(context.Background())
	f.model.setHook(func(call int, rows int64) {
		if call == 2 {
			cancel()
			time.Sleep(20 * time.Millisecond) // Generate sees ctx done first
		}
	})
	defer f.model.setHook(nil)
	imgs, err := e.Generate(ctx, serve.Request{N: 1, Sampling: sampler.Options{Sampler: sampler.DDIM, Steps: 2}})
	st := e.Stats()
	if err != nil || imgs == nil || st.Completed != 1 || st.Cancelled != 0 {
		t.Errorf("Generate = %v, %v; stats %+v: want the images, counted completed", imgs != nil, err, st)
	}
}
