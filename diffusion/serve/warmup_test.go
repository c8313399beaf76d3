package serve_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion/serve"
	"github.com/ddpm-go/ddpm/torch"
)

// Warmup runs one forward of each row count up to MaxBatch (a class-
// conditional model gets labels), counts none of them in the engine's
// statistics, frees every tensor, and stops for a done context or a closed
// engine.
func TestWarmup(t *testing.T) {
	f := tinyPipeline(t, 3)
	start := torch.LiveTensors()
	var mu sync.Mutex
	var rows []int64
	f.model.setHook(func(_ int, n int64) {
		mu.Lock()
		rows = append(rows, n)
		mu.Unlock()
	})
	defer f.model.setHook(nil)
	e, err := serve.New(f.p, serve.Options{MaxBatch: 5})
	if err != nil {
		t.Fatal(err)
	}
	if d, err := e.Warmup(context.Background()); err != nil || d <= 0 {
		t.Fatalf("warmup: %v after %v", err, d)
	}
	if want := []int64{1, 2, 3, 4, 5}; !slices.Equal(rows, want) {
		t.Errorf("warmup forwards of %v rows, want %v", rows, want)
	}
	if st := e.Stats(); st.Forwards != 0 || st.Rows != 0 {
		t.Errorf("stats after warmup: %d forwards, %d rows; want none", st.Forwards, st.Rows)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	rows = nil
	if _, err := e.Warmup(ctx); !errors.Is(err, context.Canceled) || len(rows) != 0 {
		t.Errorf("warmup with a cancelled context: %v after %d forwards; want context.Canceled at once", err, len(rows))
	}
	e.Close()
	if _, err := e.Warmup(context.Background()); !errors.Is(err, serve.ErrClosed) {
		t.Errorf("warmup after Close: %v, want ErrClosed", err)
	}
	checkNoLeaks(t, start)
}
