package data

import (
	"errors"
	"fmt"
	"image"
	_ "image/gif" // registers the GIF decoder
	_ "image/jpeg"
	_ "image/png"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"

	_ "golang.org/x/image/bmp"
	"golang.org/x/image/draw"
	_ "golang.org/x/image/webp"
)

// imageExts are the file name extensions ReadImageFolder reads, lower case.
var imageExts = []string{".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp"}

func isImageFile(name string) bool {
	ext := strings.ToLower(filepath.Ext(name))
	for _, e := range imageExts {
		if ext == e {
			return true
		}
	}
	return false
}

func hidden(name string) bool { return strings.HasPrefix(name, ".") }

// ReadImageFolder reads the PNG, JPEG, GIF, BMP and WebP files under dir
// (recognised by extension, ignoring case; names starting with "." are
// skipped).
//
// If subdirectories of dir hold images, each such subdirectory, with
// everything below it, is a class: the classes are the subdirectories'
// names in sorted order, labelled 0..K-1, and image files directly in dir
// are ignored. Otherwise the images directly in dir are read, unlabelled.
//
// Each image is resized so that its short side is size pixels (Catmull-Rom,
// which also filters when shrinking), then cropped to the central
// size×size square. Transparent images are composited over white first.
// channels is 1 (luma, ITU-R BT.601) or 3 (RGB). Images are decoded in
// parallel; a file that fails to decode is an ErrFormat error naming it.
func ReadImageFolder(dir string, size int, channels int) (*Dataset, error) {
	if size <= 0 {
		return nil, fmt.Errorf("data: image size must be positive, got %d", size)
	}
	if channels != 1 && channels != 3 {
		return nil, fmt.Errorf("data: channels must be 1 or 3, got %d", channels)
	}
	files, labels, classes, err := listImageFolder(dir)
	if err != nil {
		return nil, err
	}
	d := &Dataset{
		N: len(files), C: channels, H: size, W: size,
		Images: make([]float32, len(files)*channels*size*size),
		Source: dir,
	}
	if classes != nil {
		d.Labels, d.NumClasses, d.ClassNames = labels, len(classes), classes
	}
	errs := make([]error, len(files))
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(files)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				m, err := decodeImage(files[i])
				if err != nil {
					errs[i] = err
					continue
				}
				writePixels(d.Image(i), fitImage(m, size), channels)
			}
		}()
	}
	for i := range files {
		next <- i
	}
	close(next)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err // the first in file order
		}
	}
	return d, nil
}

// listImageFolder finds the image files of ReadImageFolder in a stable
// order, with their labels and the class names (nil if unlabelled).
func listImageFolder(dir string) (files []string, labels []int64, classes []string, err error) {
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil, notFound(dir, err)
	}
	if err != nil {
		return nil, nil, nil, fmt.Errorf("data: %w", err)
	}
	if !fi.IsDir() {
		return nil, nil, nil, &FileError{Path: dir, Err: ErrFormat, Detail: "not a directory; pass a folder of images"}
	}
	entries, err := os.ReadDir(dir) // sorted by name
	if err != nil {
		return nil, nil, nil, fmt.Errorf("data: %w", err)
	}
	for _, e := range entries {
		if !e.IsDir() || hidden(e.Name()) {
			continue
		}
		found, err := walkImages(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, nil, nil, err
		}
		if len(found) == 0 {
			continue
		}
		for range found {
			labels = append(labels, int64(len(classes)))
		}
		files = append(files, found...)
		classes = append(classes, e.Name())
	}
	if classes == nil {
		for _, e := range entries {
			if !e.IsDir() && !hidden(e.Name()) && isImageFile(e.Name()) {
				files = append(files, filepath.Join(dir, e.Name()))
			}
		}
	}
	if len(files) == 0 {
		return nil, nil, nil, &FileError{Path: dir, Err: ErrNoImages,
			Detail: fmt.Sprintf("found no %s files in it or in its subdirectories; pass a folder of images, or one with a subfolder of images per class", strings.Join(imageExts, ", "))}
	}
	return files, labels, classes, nil
}

// walkImages lists the image files below dir in lexical order.
func walkImages(dir string) ([]string, error) {
	var files []string
	err := filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path != dir && hidden(e.Name()) {
			if e.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if !e.IsDir() && isImageFile(e.Name()) {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("data: %w", err)
	}
	sort.Strings(files)
	return files, nil
}

// MaxImagePixels bounds the width times height an image file may declare:
// a few hundred bytes of PNG can claim a size whose decoding takes all
// memory (a decompression bomb). 64 megapixels is 256 MiB of RGBA.
const MaxImagePixels = 64 << 20

// decodeImage decodes one image file, after checking the size its header
// declares against MaxImagePixels.
func decodeImage(path string) (image.Image, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, notFound(path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("data: %w", err)
	}
	defer f.Close()
	cfg, _, err := image.DecodeConfig(f)
	if err != nil {
		return nil, &FileError{Path: path, Err: ErrFormat, Cause: err,
			Detail: fmt.Sprintf("cannot decode image (%v); replace or remove the file", err)}
	}
	if px := int64(cfg.Width) * int64(cfg.Height); px > MaxImagePixels {
		return nil, &FileError{Path: path, Err: ErrFormat,
			Detail: fmt.Sprintf("the image declares %dx%d pixels, more than the %d megapixels accepted; replace or remove the file", cfg.Width, cfg.Height, MaxImagePixels>>20)}
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("data: %w", err)
	}
	m, _, err := image.Decode(f)
	if err != nil {
		return nil, &FileError{Path: path, Err: ErrFormat, Cause: err,
			Detail: fmt.Sprintf("cannot decode image (%v); replace or remove the file", err)}
	}
	if b := m.Bounds(); b.Empty() {
		return nil, &FileError{Path: path, Err: ErrFormat, Detail: "the image is empty; replace or remove the file"}
	}
	return m, nil
}

// fitImage resizes src so that its short side is size, with Catmull-Rom
// interpolation, and returns the central size×size square as an opaque
// RGBA whose bounds start at (0, 0). A transparent src is composited over
// white first.
func fitImage(src image.Image, size int) *image.RGBA {
	sb := src.Bounds()
	if o, ok := src.(interface{ Opaque() bool }); !ok || !o.Opaque() {
		bg := image.NewRGBA(image.Rect(0, 0, sb.Dx(), sb.Dy()))
		draw.Draw(bg, bg.Bounds(), image.White, image.Point{}, draw.Src)
		draw.Draw(bg, bg.Bounds(), src, sb.Min, draw.Over)
		src, sb = bg, bg.Bounds()
	}
	w, h := sb.Dx(), sb.Dy()
	nw, nh := size, size // the size of the resized image, before cropping
	if w < h {
		nh = max(size, int(math.Round(float64(h)*float64(size)/float64(w))))
	} else if h < w {
		nw = max(size, int(math.Round(float64(w)*float64(size)/float64(h))))
	}
	x0, y0 := (nw-size)/2, (nh-size)/2
	dst := image.NewRGBA(image.Rect(0, 0, size, size))
	if nw == w && nh == h {
		draw.Draw(dst, dst.Bounds(), src, sb.Min.Add(image.Pt(x0, y0)), draw.Src)
		return dst
	}
	// Scale onto the whole resized rectangle, placed so that dst holds its
	// centre; only the pixels inside dst are computed.
	draw.CatmullRom.Scale(dst, image.Rect(-x0, -y0, nw-x0, nh-y0), src, sb, draw.Src, nil)
	return dst
}
