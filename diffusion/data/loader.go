package data

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math"
	"sync"
)

// LoaderOptions configure a Loader.
type LoaderOptions struct {
	// BatchSize is the number of images in a batch; it must be positive.
	BatchSize int
	// Seed determines the order of every epoch and the flips.
	Seed uint64
	// Shuffle draws a new order of the images for every epoch. Without it
	// every epoch goes through the images in order.
	Shuffle bool
	// FlipHorizontal mirrors each image left to right with probability 1/2,
	// drawn anew for every epoch.
	FlipHorizontal bool
	// Prefetch is the number of batches prepared ahead of Next by a
	// background goroutine. 0 means 2.
	Prefetch int
	// DropLast leaves out the last batch of an epoch when it would be short.
	// Otherwise the last batch holds whatever is left.
	DropLast bool
	// Shard and NumShards split every epoch between NumShards loaders for
	// data-parallel training: the epoch's order is cut into NumShards
	// contiguous parts of equal size, and this loader serves part Shard.
	// Every shard thus has the same number of batches per epoch, so the
	// loaders stay at the same epoch and no image is in two shards' batches
	// of one step. When NumShards does not divide the images, DropLast
	// leaves out the last N mod NumShards images of the epoch's order (others
	// every epoch when shuffled), and without DropLast the order is padded
	// with its first images up to a multiple of NumShards, as PyTorch's
	// DistributedSampler does; loaders with the same Seed and Shuffle and
	// every Shard from 0 to NumShards-1 then see each image once per epoch
	// and a few twice. NumShards 0 means 1.
	Shard, NumShards int
}

// Batch is one batch of images.
type Batch struct {
	Images []float32 // N*C*H*W values, NCHW; owned by the caller
	Labels []int64   // N labels; nil if the dataset is unlabelled
	N      int       // number of images; BatchSize except maybe at an epoch's end
	Epoch  int       // epoch of the batch, from 0
	Index  int       // position of the batch within its epoch, from 0
}

// A Loader serves a Dataset as an endless stream of batches, epoch after
// epoch, preparing them in a background goroutine. Batch k of the stream is
// determined by the options and k alone: epoch e is shuffled and flipped with
// random numbers drawn from a PCG generator seeded from Seed and e, and
// nothing carries over from one epoch to the next.
//
// Next and Skip must not be called concurrently; Close may be called at any
// time, from any goroutine, more than once. The Dataset must not change while
// the Loader is in use.
type Loader struct {
	d        *Dataset
	o        LoaderOptions
	lo, n    int // this shard's part of each epoch's order: n images from lo
	perEpoch int // batches per epoch

	mu     sync.Mutex
	pos    int            // batches handed out or skipped so far
	ch     chan Batch     // from the running producer, nil if none runs
	stop   chan struct{}  // closed to stop the running producer
	wg     sync.WaitGroup // the running producer
	done   chan struct{}  // closed by Close
	closed bool
}

// NewLoader returns a Loader over d. The background goroutine starts with the
// first call to Next; Close stops it.
func NewLoader(d *Dataset, o LoaderOptions) (*Loader, error) {
	if d == nil || d.N <= 0 {
		return nil, fmt.Errorf("data: cannot load batches from an empty dataset")
	}
	if len(d.Images) != d.N*d.C*d.H*d.W {
		return nil, fmt.Errorf("data: dataset %s has %d values, want N*C*H*W = %d", d.Source, len(d.Images), d.N*d.C*d.H*d.W)
	}
	if d.Labels != nil && len(d.Labels) != d.N {
		return nil, fmt.Errorf("data: dataset %s has %d labels for %d images", d.Source, len(d.Labels), d.N)
	}
	if o.BatchSize <= 0 {
		return nil, fmt.Errorf("data: batch size must be positive, got %d", o.BatchSize)
	}
	if o.Prefetch < 0 {
		return nil, fmt.Errorf("data: prefetch must not be negative, got %d", o.Prefetch)
	}
	if o.Prefetch == 0 {
		o.Prefetch = 2
	}
	if o.NumShards == 0 {
		o.NumShards = 1
	}
	if o.NumShards < 0 || o.Shard < 0 || o.Shard >= o.NumShards {
		return nil, fmt.Errorf("data: shard %d of %d is out of range (want 0 <= shard < shards)", o.Shard, o.NumShards)
	}
	// Equal shards: with sizes differing by one, a batch size that divides
	// one shard but not another gave the shards other epoch lengths, and
	// their epochs (and the images in one step's batches) drifted apart.
	n := d.N / o.NumShards
	if !o.DropLast {
		n = (d.N + o.NumShards - 1) / o.NumShards
	}
	l := &Loader{d: d, o: o, lo: o.Shard * n, n: n, done: make(chan struct{})}
	if o.DropLast {
		l.perEpoch = n / o.BatchSize
	} else {
		l.perEpoch = (n + o.BatchSize - 1) / o.BatchSize
	}
	if l.perEpoch == 0 {
		return nil, fmt.Errorf("data: shard %d of %d has %d images, not enough for one batch of %d; use a smaller batch size or fewer shards, or turn off DropLast",
			o.Shard, o.NumShards, n, o.BatchSize)
	}
	return l, nil
}

// BatchesPerEpoch returns the number of batches in an epoch of this loader.
func (l *Loader) BatchesPerEpoch() int { return l.perEpoch }

// Fingerprint is what decides a Loader's batches: its dataset and options.
// The loaders of the ranks of a data-parallel run must have equal
// fingerprints apart from Shard, or their shards overlap and leave images
// out (a different dataset size, for one, moves every shard's bounds), or
// they serve other images or flips. The JSON form leaves Shard out, so that
// the ranks' forms are equal.
type Fingerprint struct {
	Images   int    `json:"images"` // the dataset's N
	Shape    [3]int `json:"image_shape"`
	Classes  int    `json:"classes"`
	Contents string `json:"contents"` // a digest of some images and every label

	BatchSize int    `json:"batch_size"`
	Seed      uint64 `json:"seed"`
	Shuffle   bool   `json:"shuffle"`
	Flip      bool   `json:"flip"`
	DropLast  bool   `json:"drop_last"`
	Shard     int    `json:"-"`
	NumShards int    `json:"shards"`
}

// fingerprintImages is the number of images, evenly spaced, that the
// contents digest reads: enough to tell two datasets apart, few enough to
// cost nothing at any size.
const fingerprintImages = 64

// Fingerprint returns what decides this loader's batches.
func (l *Loader) Fingerprint() Fingerprint {
	d := l.d
	h := fnv.New64a()
	var buf []byte
	for k := range min(fingerprintImages, d.N) {
		i := k * d.N / min(fingerprintImages, d.N)
		buf = binary.LittleEndian.AppendUint64(buf[:0], uint64(i))
		for _, v := range d.Image(i) {
			buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(v))
		}
		h.Write(buf)
	}
	buf = buf[:0]
	for _, v := range d.Labels {
		buf = binary.LittleEndian.AppendUint64(buf, uint64(v))
	}
	h.Write(buf)
	return Fingerprint{
		Images: d.N, Shape: [3]int{d.C, d.H, d.W}, Classes: d.NumClasses, Contents: fmt.Sprintf("%016x", h.Sum64()),
		BatchSize: l.o.BatchSize, Seed: l.o.Seed, Shuffle: l.o.Shuffle, Flip: l.o.FlipHorizontal, DropLast: l.o.DropLast,
		Shard: l.o.Shard, NumShards: l.o.NumShards,
	}
}

// Next returns the next batch. It blocks until one is ready or ctx is done,
// and returns ctx's error in that case (the stream does not advance). After
// Close it returns ErrClosed.
func (l *Loader) Next(ctx context.Context) (Batch, error) {
	if err := ctx.Err(); err != nil {
		return Batch{}, err
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return Batch{}, ErrClosed
	}
	if l.ch == nil {
		l.start()
	}
	ch := l.ch
	l.mu.Unlock()
	select {
	case <-ctx.Done():
		return Batch{}, ctx.Err()
	case <-l.done:
		return Batch{}, ErrClosed
	case b := <-ch:
		l.mu.Lock()
		l.pos++
		l.mu.Unlock()
		return b, nil
	}
}

// Skip moves the stream on by batches batches without preparing them, so
// that the next call to Next returns what it would have returned after that
// many more calls. A trainer resuming after k batches calls Skip(k) on a new
// Loader with the same dataset and options. batches <= 0 does nothing.
func (l *Loader) Skip(batches int) {
	if batches <= 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	l.halt()
	l.pos += batches
}

// Close stops the background goroutine and waits for it to exit.
func (l *Loader) Close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	l.closed = true
	close(l.done)
	l.halt()
}

// start starts a producer at the current position. l.mu is held.
func (l *Loader) start() {
	l.ch = make(chan Batch, l.o.Prefetch)
	l.stop = make(chan struct{})
	l.wg.Add(1)
	go l.produce(l.pos, l.ch, l.stop)
}

// halt stops the running producer, if any, dropping what it prepared.
// l.mu is held.
func (l *Loader) halt() {
	if l.ch == nil {
		return
	}
	close(l.stop)
	l.wg.Wait()
	l.ch, l.stop = nil, nil
}

// produce sends batches from position pos on until stop is closed.
func (l *Loader) produce(pos int, ch chan<- Batch, stop <-chan struct{}) {
	defer l.wg.Done()
	epoch := -1
	var order []int
	var flips []bool
	for ; ; pos++ {
		e, index := pos/l.perEpoch, pos%l.perEpoch
		if e != epoch {
			select {
			case <-stop:
				return
			default:
			}
			epoch = e
			order, flips = l.plan(e)
		}
		select {
		case ch <- l.batch(order, flips, e, index):
		case <-stop:
			return
		}
	}
}

// plan returns this shard's part of the order of epoch e, and the flip of
// every image in e (nil if images are not flipped).
func (l *Loader) plan(e int) (order []int, flips []bool) {
	if l.o.Shuffle {
		order = permutation(l.d.N, newRand(l.o.Seed, streamShuffle, e))
	} else {
		order = make([]int, l.d.N)
		for i := range order {
			order[i] = i
		}
	}
	if l.o.FlipHorizontal {
		flips = coinFlips(l.d.N, newRand(l.o.Seed, streamFlip, e))
	}
	if l.lo+l.n <= len(order) {
		return order[l.lo : l.lo+l.n], flips
	}
	// The padded part wraps around to the start of the order.
	part := make([]int, l.n)
	for i := range part {
		part[i] = order[(l.lo+i)%len(order)]
	}
	return part, flips
}

// batch assembles batch index of epoch e.
func (l *Loader) batch(order []int, flips []bool, e, index int) Batch {
	start := index * l.o.BatchSize
	idx := order[start:min(start+l.o.BatchSize, len(order))]
	d := l.d
	size := d.C * d.H * d.W
	b := Batch{Images: make([]float32, len(idx)*size), N: len(idx), Epoch: e, Index: index}
	if d.Labels != nil {
		b.Labels = make([]int64, len(idx))
	}
	for j, i := range idx {
		dst := b.Images[j*size : (j+1)*size]
		if flips != nil && flips[i] {
			flipInto(dst, d.Image(i), d.W)
		} else {
			copy(dst, d.Image(i))
		}
		if d.Labels != nil {
			b.Labels[j] = d.Labels[i]
		}
	}
	return b
}

// flipInto copies src to dst mirrored left to right; rows are w values long.
func flipInto(dst, src []float32, w int) {
	for r := 0; r < len(src); r += w {
		s, t := src[r:r+w], dst[r:r+w]
		for x := range w {
			t[x] = s[w-1-x]
		}
	}
}
