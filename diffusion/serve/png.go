package serve

import (
	"image"
	"image/png"
	"io"
	"sync"
)

// pngEncoder writes the answers' PNGs, keeping the encoders' buffers (zlib's
// compressor among them, hundreds of KiB of tables) for the next image
// instead of allocating them for each: under load the fresh compressors'
// allocation, page faults and collection cost more than the compression of
// a small image itself (BenchmarkEncodePNG).
var pngEncoder = png.Encoder{BufferPool: &pngBuffers{}}

// pngBuffers is a png.EncoderBufferPool over a sync.Pool.
type pngBuffers struct{ pool sync.Pool }

func (p *pngBuffers) Get() *png.EncoderBuffer {
	b, _ := p.pool.Get().(*png.EncoderBuffer)
	return b
}

func (p *pngBuffers) Put(b *png.EncoderBuffer) { p.pool.Put(b) }

// encodePNG writes img to w as PNG.
func encodePNG(w io.Writer, img image.Image) error { return pngEncoder.Encode(w, img) }
