package data

import (
	"fmt"
	"image"
	"math"
)

// Dataset is an in-memory set of images, all C×H×W, as float32 in [-1, 1],
// with optional labels.
type Dataset struct {
	Images     []float32 // N*C*H*W values, row-major NCHW
	N, C, H, W int       // number of images, channels, height, width
	Labels     []int64   // one class per image in [0, NumClasses); nil if unlabelled
	NumClasses int       // 0 if unlabelled
	ClassNames []string  // names of the classes, indexed by label; nil if unknown
	Source     string    // where the images came from, for logs
	Path       string    // the path Open read it from ("" otherwise): Open(Path, ...) reads it again
}

// Image returns the C*H*W values of image i. The slice shares memory with
// d.Images.
func (d *Dataset) Image(i int) []float32 {
	n := d.C * d.H * d.W
	return d.Images[i*n : (i+1)*n : (i+1)*n]
}

// Split divides d into a training set and a held-out set of holdout images
// chosen at random, deterministically for a given seed. Both keep d's order
// and copy its images and labels. holdout is clamped to [0, d.N].
func (d *Dataset) Split(holdout int, seed uint64) (train, held *Dataset) {
	holdout = min(max(holdout, 0), d.N)
	perm := permutation(d.N, newRand(seed, streamSplit, 0))
	inHeld := make([]bool, d.N)
	for _, i := range perm[:holdout] {
		inHeld[i] = true
	}
	trainIdx := make([]int, 0, d.N-holdout)
	heldIdx := make([]int, 0, holdout)
	for i, h := range inHeld {
		if h {
			heldIdx = append(heldIdx, i)
		} else {
			trainIdx = append(trainIdx, i)
		}
	}
	return d.subset(trainIdx), d.subset(heldIdx)
}

// subset copies the images with the given indices into a new Dataset.
func (d *Dataset) subset(idx []int) *Dataset {
	s := &Dataset{
		N: len(idx), C: d.C, H: d.H, W: d.W,
		Images:     make([]float32, len(idx)*d.C*d.H*d.W),
		NumClasses: d.NumClasses,
		ClassNames: append([]string(nil), d.ClassNames...),
		Source:     d.Source,
		Path:       d.Path,
	}
	if d.Labels != nil {
		s.Labels = make([]int64, len(idx))
	}
	for j, i := range idx {
		copy(s.Image(j), d.Image(i))
		if d.Labels != nil {
			s.Labels[j] = d.Labels[i]
		}
	}
	return s
}

// byteValue maps a pixel byte v to v/127.5 - 1.
var byteValue = func() (t [256]float32) {
	for v := range t {
		t[v] = float32(float64(v)/127.5 - 1)
	}
	return t
}()

// valueByte inverts byteValue, rounding and clamping.
func valueByte(x float32) uint8 {
	v := math.Round((float64(x) + 1) * 127.5)
	return uint8(min(max(v, 0), 255))
}

// luma is the ITU-R BT.601 luma of an 8-bit RGB pixel, computed as
// image/color's GrayModel does; a gray pixel keeps its value exactly.
func luma(r, g, b uint8) uint8 {
	return uint8((19595*uint32(r) + 38470*uint32(g) + 7471*uint32(b) + 1<<15) >> 16)
}

// writePixels stores the pixels of m, which must be opaque, into dst as
// channels planes (1: luma, 3: RGB) of values in [-1, 1].
func writePixels(dst []float32, m *image.RGBA, channels int) {
	w, h := m.Rect.Dx(), m.Rect.Dy()
	plane := w * h
	for y := range h {
		row := m.Pix[y*m.Stride : y*m.Stride+4*w]
		for x := range w {
			r, g, b := row[4*x], row[4*x+1], row[4*x+2]
			o := y*w + x
			if channels == 1 {
				dst[o] = byteValue[luma(r, g, b)]
				continue
			}
			dst[o] = byteValue[r]
			dst[plane+o] = byteValue[g]
			dst[2*plane+o] = byteValue[b]
		}
	}
}

// rgba returns image i of d, which has 1 or 3 channels, as an opaque RGBA.
func (d *Dataset) rgba(i int) *image.RGBA {
	m := image.NewRGBA(image.Rect(0, 0, d.W, d.H))
	px := d.Image(i)
	plane := d.H * d.W
	for o := range plane {
		p := m.Pix[4*o : 4*o+4]
		if d.C == 1 {
			v := valueByte(px[o])
			p[0], p[1], p[2] = v, v, v
		} else {
			p[0], p[1], p[2] = valueByte(px[o]), valueByte(px[plane+o]), valueByte(px[2*plane+o])
		}
		p[3] = 255
	}
	return m
}

// maxPad is the largest size difference that conform fills by padding when
// padding is allowed; larger differences are resized.
const maxPad = 4

// conform returns d brought to size×size with the given channels; size 0
// keeps d's height and width, channels 0 keeps its channels. If pad is set
// and d's square images are at most maxPad pixels smaller than size, they are
// centred on a background of -1 instead of being resized. conform returns d
// itself when nothing changes.
func (d *Dataset) conform(size, channels int, pad bool) (*Dataset, error) {
	if channels == 0 {
		channels = d.C
	}
	if (d.C != 1 && d.C != 3) || (channels != 1 && channels != 3) {
		return nil, fmt.Errorf("data: cannot convert %s from %d to %d channels (only 1 and 3 are supported)", d.Source, d.C, channels)
	}
	h, w := d.H, d.W
	if size != 0 {
		h, w = size, size
	}
	if h == d.H && w == d.W && channels == d.C {
		return d, nil
	}
	out := &Dataset{
		N: d.N, C: channels, H: h, W: w,
		Images:     make([]float32, d.N*channels*h*w),
		Labels:     d.Labels,
		NumClasses: d.NumClasses,
		ClassNames: d.ClassNames,
		Source:     d.Source,
		Path:       d.Path,
	}
	switch {
	case h == d.H && w == d.W:
		for i := range d.N {
			convertChannels(out.Image(i), d.Image(i), d.C, channels, h*w)
		}
	case pad && d.H == d.W && size > d.H && size-d.H <= maxPad:
		top, left := (size-d.H)/2, (size-d.W)/2
		tmp := make([]float32, d.C*size*size)
		for i := range d.N {
			for j := range tmp {
				tmp[j] = -1
			}
			src := d.Image(i)
			for c := range d.C {
				for y := range d.H {
					s := src[(c*d.H+y)*d.W : (c*d.H+y+1)*d.W]
					copy(tmp[(c*size+top+y)*size+left:], s)
				}
			}
			convertChannels(out.Image(i), tmp, d.C, channels, size*size)
		}
	default:
		for i := range d.N {
			writePixels(out.Image(i), fitImage(d.rgba(i), size), channels)
		}
	}
	return out, nil
}

// convertChannels copies one image of plane pixels per channel from src
// (from channels) to dst (to channels), taking the luma of RGB or repeating
// gray.
func convertChannels(dst, src []float32, from, to, plane int) {
	switch {
	case from == to:
		copy(dst, src)
	case from == 1 && to == 3:
		copy(dst, src)
		copy(dst[plane:], src)
		copy(dst[2*plane:], src)
	default: // 3 → 1
		for o := range plane {
			dst[o] = byteValue[luma(valueByte(src[o]), valueByte(src[plane+o]), valueByte(src[2*plane+o]))]
		}
	}
}
