package data

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"testing"
	"time"
)

func newLoader(t *testing.T, d *Dataset, o LoaderOptions) *Loader {
	t.Helper()
	l, err := NewLoader(d, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	return l
}

func next(t *testing.T, l *Loader) Batch {
	t.Helper()
	b, err := l.Next(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// epochIDs reads batches of one epoch and returns the image indices in order.
func epochIDs(t *testing.T, l *Loader, epoch int) []int {
	t.Helper()
	var out []int
	for i := range l.BatchesPerEpoch() {
		b := next(t, l)
		if b.Epoch != epoch || b.Index != i {
			t.Fatalf("batch is epoch %d index %d, want %d and %d", b.Epoch, b.Index, epoch, i)
		}
		out = append(out, ids(b.Images, 2)...)
	}
	return out
}

func isPermutation(ids []int, n int) bool {
	s := slices.Sorted(slices.Values(ids))
	if len(s) != n {
		return false
	}
	for i, v := range s {
		if v != i {
			return false
		}
	}
	return true
}

func TestLoaderCoversEachEpoch(t *testing.T) {
	d := numbered(10)
	l := newLoader(t, d, LoaderOptions{BatchSize: 3, Seed: 1, Shuffle: true})
	if l.BatchesPerEpoch() != 4 {
		t.Fatalf("BatchesPerEpoch = %d, want 4", l.BatchesPerEpoch())
	}
	var epochs [][]int
	for e := range 3 {
		var got []int
		for i := range 4 {
			b := next(t, l)
			wantN := 3
			if i == 3 {
				wantN = 1
			}
			if b.N != wantN || len(b.Images) != wantN*2 || len(b.Labels) != wantN || b.Epoch != e || b.Index != i {
				t.Fatalf("batch %d of epoch %d: N=%d, %d values, %d labels, epoch %d, index %d", i, e, b.N, len(b.Images), len(b.Labels), b.Epoch, b.Index)
			}
			for j, id := range ids(b.Images, 2) {
				if b.Labels[j] != int64(id%3) || b.Images[2*j+1] != -float32(id) {
					t.Fatalf("label or values do not belong to image %d", id)
				}
			}
			got = append(got, ids(b.Images, 2)...)
		}
		if !isPermutation(got, 10) {
			t.Fatalf("epoch %d covers %v, not each image once", e, got)
		}
		epochs = append(epochs, got)
	}
	if slices.Equal(epochs[0], epochs[1]) || slices.Equal(epochs[1], epochs[2]) {
		t.Errorf("epochs are not reshuffled: %v", epochs)
	}
}

func TestLoaderDropLast(t *testing.T) {
	l := newLoader(t, numbered(10), LoaderOptions{BatchSize: 3, DropLast: true})
	if l.BatchesPerEpoch() != 3 {
		t.Fatalf("BatchesPerEpoch = %d, want 3", l.BatchesPerEpoch())
	}
	for e := range 2 {
		got := epochIDs(t, l, e)
		if !slices.Equal(got, []int{0, 1, 2, 3, 4, 5, 6, 7, 8}) {
			t.Errorf("epoch %d without shuffling = %v", e, got)
		}
	}
}

func TestLoaderDeterministic(t *testing.T) {
	d := numbered(50)
	read := func(seed uint64) []int {
		l := newLoader(t, d, LoaderOptions{BatchSize: 7, Seed: seed, Shuffle: true})
		var out []int
		for e := range 2 {
			out = append(out, epochIDs(t, l, e)...)
		}
		return out
	}
	a, b, c := read(5), read(5), read(6)
	if !slices.Equal(a, b) {
		t.Errorf("same seed, different order")
	}
	if slices.Equal(a, c) {
		t.Errorf("different seeds, same order")
	}
	if slices.Equal(a[:50], a[50:]) {
		t.Errorf("the two epochs have the same order")
	}
}

func TestLoaderSkip(t *testing.T) {
	d := numbered(23)
	o := LoaderOptions{BatchSize: 4, Seed: 9, Shuffle: true, FlipHorizontal: true, Prefetch: 3}
	ref := newLoader(t, d, o)
	var want []Batch
	for range 20 { // six batches an epoch: more than three epochs
		want = append(want, next(t, ref))
	}
	same := func(a, b Batch) bool {
		return a.N == b.N && a.Epoch == b.Epoch && a.Index == b.Index && slices.Equal(a.Images, b.Images) && slices.Equal(a.Labels, b.Labels)
	}
	for _, k := range []int{0, 1, 5, 6, 7, 13, 19} {
		l := newLoader(t, d, o)
		l.Skip(k)
		if b := next(t, l); !same(b, want[k]) {
			t.Errorf("Skip(%d) then Next gives epoch %d index %d %v, want epoch %d index %d %v", k, b.Epoch, b.Index, ids(b.Images, 2), want[k].Epoch, want[k].Index, ids(want[k].Images, 2))
		}
	}
	// Skip is relative to where the stream is, prefetched batches or not.
	l := newLoader(t, d, o)
	next(t, l)
	next(t, l)
	l.Skip(3)
	if b := next(t, l); !same(b, want[5]) {
		t.Errorf("Next, Next, Skip(3), Next gives epoch %d index %d, want batch 5", b.Epoch, b.Index)
	}
	l.Skip(0)
	l.Skip(-2)
	if b := next(t, l); !same(b, want[6]) {
		t.Errorf("Skip(0) or Skip(-2) moved the stream")
	}
}

func TestLoaderFlips(t *testing.T) {
	const n = 2000
	d := &Dataset{N: n, C: 2, H: 1, W: 3, Images: make([]float32, n*6)}
	for i := range n {
		copy(d.Image(i), []float32{float32(i), 0, 1, 10, 11, 12})
	}
	read := func(seed uint64, epochs int) []bool {
		l := newLoader(t, d, LoaderOptions{BatchSize: 64, Seed: seed, FlipHorizontal: true})
		flipped := make([]bool, 0, n*epochs)
		for range epochs * l.BatchesPerEpoch() {
			b := next(t, l)
			for j := range b.N {
				img := b.Images[j*6 : j*6+6]
				switch {
				case img[1] == 0 && img[2] == 1 && img[3] == 10 && img[5] == 12:
					flipped = append(flipped, false)
				case img[0] == 1 && img[1] == 0 && img[3] == 12 && img[4] == 11 && img[5] == 10:
					flipped = append(flipped, true)
				default:
					t.Fatalf("image %v is neither the original nor its mirror", img)
				}
			}
		}
		return flipped
	}
	a := read(3, 2)
	count := 0
	for _, f := range a[:n] {
		if f {
			count++
		}
	}
	if count < n*45/100 || count > n*55/100 {
		t.Errorf("%d of %d images flipped, want about half", count, n)
	}
	if !slices.Equal(a, read(3, 2)) {
		t.Errorf("flips differ for the same seed")
	}
	if slices.Equal(a[:n], a[n:]) {
		t.Errorf("flips repeat from one epoch to the next")
	}
	if slices.Equal(a, read(4, 2)) {
		t.Errorf("flips are the same for different seeds")
	}
	l := newLoader(t, d, LoaderOptions{BatchSize: 64, Seed: 3})
	for range l.BatchesPerEpoch() {
		b := next(t, l)
		for j := range b.N {
			if b.Images[j*6+1] != 0 {
				t.Fatalf("image flipped without FlipHorizontal")
			}
		}
	}
}

func TestLoaderShards(t *testing.T) {
	d := numbered(29)
	for _, shards := range []int{1, 2, 3, 4} {
		var loaders []*Loader
		for s := range shards {
			loaders = append(loaders, newLoader(t, d, LoaderOptions{BatchSize: 4, Seed: 11, Shuffle: true, Shard: s, NumShards: shards}))
		}
		var prev []int
		for e := range 3 {
			var all []int
			for _, l := range loaders {
				all = append(all, epochIDs(t, l, e)...)
			}
			// Padded to a multiple of the shards with the epoch's first
			// images: each image once, and those first few twice.
			pad := (shards - 29%shards) % shards
			if !isPermutation(all[:29], 29) || !slices.Equal(all[29:], all[:pad]) {
				t.Fatalf("%d shards: epoch %d gives %v, not each image once and %d padding", shards, e, all, pad)
			}
			if slices.Equal(all, prev) {
				t.Errorf("%d shards: epoch %d repeats the previous order", shards, e)
			}
			prev = all
		}
	}
}

// The shards of one step are the same epoch and batch, whatever the batch
// size: shards whose sizes differed by one drifted apart by whole epochs
// when the batch size divided one and not the other, and one step's
// batches then held an image twice.
func TestLoaderShardsStayInStep(t *testing.T) {
	for _, tc := range []struct {
		n, shards, batch int
		dropLast         bool
	}{
		{10, 3, 2, true}, {10, 3, 3, false}, {10, 3, 2, false}, {11, 4, 2, true},
		{29, 4, 3, true}, {29, 4, 4, false}, {7, 3, 1, true}, {2, 3, 1, false},
	} {
		name := fmt.Sprintf("N%d/shards%d/batch%d/droplast=%v", tc.n, tc.shards, tc.batch, tc.dropLast)
		t.Run(name, func(t *testing.T) {
			d := numbered(tc.n)
			var loaders []*Loader
			for s := range tc.shards {
				loaders = append(loaders, newLoader(t, d, LoaderOptions{BatchSize: tc.batch, Seed: 5, Shuffle: true,
					DropLast: tc.dropLast, Shard: s, NumShards: tc.shards}))
			}
			per := loaders[0].BatchesPerEpoch()
			for s, l := range loaders {
				if l.BatchesPerEpoch() != per {
					t.Fatalf("shard %d has %d batches per epoch, shard 0 %d", s, l.BatchesPerEpoch(), per)
				}
			}
			for e := range 4 {
				seen := map[int]int{}
				for i := range per {
					inStep := map[int]bool{}
					size := -1
					for s, l := range loaders {
						b := next(t, l)
						if b.Epoch != e || b.Index != i {
							t.Fatalf("step %d: shard %d serves epoch %d batch %d, want %d and %d", e*per+i, s, b.Epoch, b.Index, e, i)
						}
						if size >= 0 && b.N != size {
							t.Fatalf("epoch %d batch %d: shard %d has %d images, shard 0 %d", e, i, s, b.N, size)
						}
						size = b.N
						for _, id := range ids(b.Images, 2) {
							if tc.dropLast && inStep[id] {
								t.Fatalf("epoch %d batch %d: image %d is in two shards' batches", e, i, id)
							}
							inStep[id] = true
							seen[id]++
						}
					}
				}
				for id := range tc.n {
					switch {
					case tc.dropLast && seen[id] > 1:
						t.Fatalf("epoch %d: image %d served %d times", e, id, seen[id])
					case !tc.dropLast && seen[id] == 0:
						t.Fatalf("epoch %d: image %d never served", e, id)
					}
				}
			}
		})
	}
}

func TestLoaderContext(t *testing.T) {
	l := newLoader(t, numbered(10), LoaderOptions{BatchSize: 2})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := l.Next(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Next with a cancelled context: %v", err)
	}
	ctx, cancel = context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	if _, err := l.Next(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Next past the deadline: %v", err)
	}
	if b := next(t, l); b.Index != 0 || b.Epoch != 0 {
		t.Errorf("cancelled calls moved the stream to epoch %d index %d", b.Epoch, b.Index)
	}
}

// waitGoroutines waits for the number of goroutines to fall to n.
func waitGoroutines(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines, want %d: the producer did not stop", runtime.NumGoroutine(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestLoaderClose(t *testing.T) {
	base := runtime.NumGoroutine()
	d := numbered(100)
	var loaders []*Loader
	for i := range 5 {
		l, err := NewLoader(d, LoaderOptions{BatchSize: 3, Shuffle: true, Seed: uint64(i), Prefetch: 1})
		if err != nil {
			t.Fatal(err)
		}
		next(t, l)
		l.Skip(2) // restarts the producer
		next(t, l)
		loaders = append(loaders, l)
	}
	if runtime.NumGoroutine() < base+5 {
		t.Errorf("%d goroutines with 5 loaders running, from %d", runtime.NumGoroutine(), base)
	}
	for _, l := range loaders {
		l.Close()
		l.Close() // twice is fine
		if _, err := l.Next(context.Background()); !errors.Is(err, ErrClosed) {
			t.Errorf("Next after Close: %v, want ErrClosed", err)
		}
		l.Skip(1)
	}
	waitGoroutines(t, base)

	// Close wakes a Next waiting on another goroutine or returns it a batch.
	l, err := NewLoader(d, LoaderOptions{BatchSize: 3})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() {
		_, err := l.Next(context.Background())
		done <- err
	}()
	l.Close()
	if err := <-done; err != nil && !errors.Is(err, ErrClosed) {
		t.Errorf("Next during Close: %v", err)
	}
	waitGoroutines(t, base)
}

func TestNewLoaderErrors(t *testing.T) {
	d := numbered(10)
	for _, tc := range []struct {
		name  string
		d     *Dataset
		o     LoaderOptions
		parts []string
	}{
		{"nil", nil, LoaderOptions{BatchSize: 1}, []string{"empty dataset"}},
		{"empty", &Dataset{C: 1, H: 1, W: 1}, LoaderOptions{BatchSize: 1}, []string{"empty dataset"}},
		{"values", &Dataset{N: 2, C: 1, H: 1, W: 2, Images: make([]float32, 3)}, LoaderOptions{BatchSize: 1}, []string{"3 values, want N*C*H*W = 4"}},
		{"labels", &Dataset{N: 1, C: 1, H: 1, W: 1, Images: make([]float32, 1), Labels: make([]int64, 2)}, LoaderOptions{BatchSize: 1}, []string{"2 labels for 1 images"}},
		{"batch size", d, LoaderOptions{}, []string{"batch size must be positive, got 0"}},
		{"prefetch", d, LoaderOptions{BatchSize: 1, Prefetch: -1}, []string{"prefetch must not be negative"}},
		{"shard", d, LoaderOptions{BatchSize: 1, Shard: 2, NumShards: 2}, []string{"shard 2 of 2 is out of range"}},
		{"shards", d, LoaderOptions{BatchSize: 1, NumShards: -1}, []string{"out of range"}},
		{"too few", d, LoaderOptions{BatchSize: 4, Shard: 2, NumShards: 3, DropLast: true}, []string{"shard 2 of 3 has 3 images"}},
		{"too few big batch", d, LoaderOptions{BatchSize: 11, DropLast: true}, []string{"has 10 images, not enough for one batch of 11"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := NewLoader(tc.d, tc.o)
			if l != nil {
				t.Errorf("got a loader with an error")
			}
			checkErr(t, err, nil, tc.parts...)
		})
	}
}

// A fingerprint tells apart what changes the shards' batches, and the
// shards' JSON forms are equal.
func TestLoaderFingerprint(t *testing.T) {
	o := LoaderOptions{BatchSize: 2, Seed: 3, Shuffle: true, DropLast: true, NumShards: 2}
	fp := func(d *Dataset, o LoaderOptions) string {
		b, err := json.Marshal(newLoader(t, d, o).Fingerprint())
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	base := fp(numbered(12), o)
	other := o
	other.Shard = 1
	if got := fp(numbered(12), other); got != base {
		t.Errorf("shard 1: %s, shard 0: %s", got, base)
	}
	changed := numbered(12)
	changed.Images[2*7] = 100
	flip := o
	flip.FlipHorizontal = true
	for name, got := range map[string]string{
		"size":     fp(numbered(13), o),
		"contents": fp(changed, o),
		"flip":     fp(numbered(12), flip),
	} {
		if got == base {
			t.Errorf("another %s gives the same fingerprint %s", name, got)
		}
	}
}
