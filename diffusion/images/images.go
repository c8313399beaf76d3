// Package images turns model outputs in [-1, 1] into pictures: single
// images, grids and strips, saved as PNG.
package images

import (
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
)

// ToImage converts one C×H×W image in [-1, 1] (C = 1 or 3, row-major planes)
// to a Go image, clamping out-of-range values.
func ToImage(pix []float32, c, h, w int) (image.Image, error) {
	if c != 1 && c != 3 {
		return nil, fmt.Errorf("images: %d channels (want 1 or 3)", c)
	}
	if len(pix) != c*h*w {
		return nil, fmt.Errorf("images: %d values for a %dx%dx%d image", len(pix), c, h, w)
	}
	if c == 1 {
		img := image.NewGray(image.Rect(0, 0, w, h))
		for i, v := range pix {
			img.Pix[i] = toByte(v)
		}
		return img, nil
	}
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	plane := h * w
	for i := range plane {
		img.Pix[4*i] = toByte(pix[i])
		img.Pix[4*i+1] = toByte(pix[plane+i])
		img.Pix[4*i+2] = toByte(pix[2*plane+i])
		img.Pix[4*i+3] = 255
	}
	return img, nil
}

// toByte maps [-1, 1] to [0, 255], rounding, the inverse of the loaders'
// v/127.5 - 1.
func toByte(v float32) uint8 {
	x := math.Round((float64(v) + 1) * 127.5)
	return uint8(max(0, min(255, x)))
}

// Grid lays out n images (N×C×H×W values) in rows of cols, separated by a
// pad-pixel border.
func Grid(pix []float32, n, c, h, w, cols, pad int) (image.Image, error) {
	if n < 1 || cols < 1 {
		return nil, fmt.Errorf("images: grid of %d images in %d columns", n, cols)
	}
	if len(pix) != n*c*h*w {
		return nil, fmt.Errorf("images: %d values for %d images of %dx%dx%d", len(pix), n, c, h, w)
	}
	cols = min(cols, n)
	rows := (n + cols - 1) / cols
	out := image.NewRGBA(image.Rect(0, 0, cols*(w+pad)+pad, rows*(h+pad)+pad))
	for i := range out.Pix {
		out.Pix[i] = 255 // white border
	}
	per := c * h * w
	for i := range n {
		img, err := ToImage(pix[i*per:(i+1)*per], c, h, w)
		if err != nil {
			return nil, err
		}
		x0, y0 := pad+(i%cols)*(w+pad), pad+(i/cols)*(h+pad)
		for y := range h {
			for x := range w {
				out.Set(x0+x, y0+y, color.RGBAModel.Convert(img.At(x, y)))
			}
		}
	}
	return out, nil
}

// SavePNG writes img to path atomically (a temporary file renamed into
// place), creating the directory if needed. The file is readable by
// everyone (mode 0644, less the umask), like checkpoints.
func SavePNG(path string, img image.Image) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	// Not os.CreateTemp, which makes the file 0600: OpenFile applies the
	// umask to 0644 as any other file the tool writes.
	tmp := filepath.Join(dir, fmt.Sprintf(".tmp-%d-%d.png", os.Getpid(), rand.Uint64()))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	defer os.Remove(tmp) // no-op after a successful rename
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
