package data

import (
	"image"
	"image/color"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var (
	red   = color.NRGBA{255, 0, 0, 255}
	blue  = color.NRGBA{0, 0, 255, 255}
	green = color.NRGBA{0, 255, 0, 255}
)

// value is the dataset value of a pixel byte.
func value(v uint8) float32 { return float32(float64(v)/127.5 - 1) }

// halves returns a w×h image whose left half is left and right half right.
func halves(w, h int, left, right color.NRGBA) *image.NRGBA {
	m := solid(w, h, left)
	for y := range h {
		for x := w / 2; x < w; x++ {
			m.SetNRGBA(x, y, right)
		}
	}
	return m
}

// pixel returns the channels of pixel (x, y) of a C×size×size image.
func pixel(img []float32, c, size, x, y int) []float32 {
	p := make([]float32, c)
	for k := range c {
		p[k] = img[(k*size+y)*size+x]
	}
	return p
}

func TestReadImageFolderClasses(t *testing.T) {
	dir := t.TempDir()
	writePNG(t, filepath.Join(dir, "dog", "b.png"), solid(16, 16, blue))
	writeJPEG(t, filepath.Join(dir, "dog", "a.jpg"), solid(40, 24, green))
	writePNG(t, filepath.Join(dir, "dog", "deeper", "c.PNG"), solid(8, 12, red))
	writePNG(t, filepath.Join(dir, "cat", "x.png"), solid(30, 30, red))
	writeFile(t, filepath.Join(dir, "cat", "notes.txt"), []byte("not an image"))
	writePNG(t, filepath.Join(dir, "cat", ".hidden.png"), solid(3, 3, blue))
	writePNG(t, filepath.Join(dir, ".git", "y.png"), solid(3, 3, blue))
	writeFile(t, filepath.Join(dir, "empty", "readme"), []byte("x"))
	writePNG(t, filepath.Join(dir, "top.png"), solid(16, 16, blue)) // ignored: there are classes

	d, err := ReadImageFolder(dir, 16, 3)
	if err != nil {
		t.Fatal(err)
	}
	if d.N != 4 || d.C != 3 || d.H != 16 || d.W != 16 || len(d.Images) != 4*3*16*16 {
		t.Fatalf("shape %dx%dx%dx%d, want 4x3x16x16", d.N, d.C, d.H, d.W)
	}
	if d.NumClasses != 2 || len(d.ClassNames) != 2 || d.ClassNames[0] != "cat" || d.ClassNames[1] != "dog" {
		t.Fatalf("classes %d %q, want cat and dog", d.NumClasses, d.ClassNames)
	}
	// Sorted: cat/x.png, dog/a.jpg, dog/b.png, dog/deeper/c.PNG.
	wantLabels := []int64{0, 1, 1, 1}
	wantColour := []color.NRGBA{red, green, blue, red}
	for i := range d.N {
		if d.Labels[i] != wantLabels[i] {
			t.Errorf("label %d = %d, want %d", i, d.Labels[i], wantLabels[i])
		}
		tol := float32(0)
		if i == 1 {
			tol = 0.05 // JPEG
		}
		c := wantColour[i]
		for _, xy := range [][2]int{{0, 0}, {8, 8}, {15, 15}} {
			got := pixel(d.Image(i), 3, 16, xy[0], xy[1])
			for k, want := range []uint8{c.R, c.G, c.B} {
				if !near(got[k], value(want), tol) {
					t.Errorf("image %d pixel %v = %v, want %v", i, xy, got, c)
				}
			}
		}
	}
}

func TestReadImageFolderUnlabelled(t *testing.T) {
	dir := t.TempDir()
	m := image.NewNRGBA(image.Rect(0, 0, 2, 2))
	m.SetNRGBA(0, 0, color.NRGBA{0, 0, 0, 255})
	m.SetNRGBA(1, 0, color.NRGBA{255, 255, 255, 255})
	m.SetNRGBA(0, 1, color.NRGBA{10, 20, 30, 255})
	m.SetNRGBA(1, 1, color.NRGBA{128, 64, 200, 255})
	writePNG(t, filepath.Join(dir, "a.png"), m)
	writePNG(t, filepath.Join(dir, "b.gif.png"), solid(2, 2, blue))
	d, err := ReadImageFolder(dir, 2, 3)
	if err != nil {
		t.Fatal(err)
	}
	if d.N != 2 || d.Labels != nil || d.NumClasses != 0 || d.ClassNames != nil {
		t.Fatalf("N=%d labels=%v classes=%d %v, want 2 unlabelled images", d.N, d.Labels, d.NumClasses, d.ClassNames)
	}
	// An image of the requested size is copied exactly, R, G and B planes.
	want := []uint8{0, 255, 10, 128, 0, 255, 20, 64, 0, 255, 30, 200}
	for i, v := range want {
		if d.Images[i] != value(v) {
			t.Errorf("value %d = %v, want %v", i, d.Images[i], value(v))
		}
	}
}

func TestReadImageFolderLuma(t *testing.T) {
	dir := t.TempDir()
	gray := image.NewGray(image.Rect(0, 0, 2, 2))
	copy(gray.Pix, []uint8{0, 77, 0, 77})
	writePNG(t, filepath.Join(dir, "a.png"), gray)
	writePNG(t, filepath.Join(dir, "b.png"), halves(2, 2, color.NRGBA{200, 100, 50, 255}, color.NRGBA{255, 255, 255, 255}))

	d, err := ReadImageFolder(dir, 2, 1)
	if err != nil {
		t.Fatal(err)
	}
	if d.C != 1 || d.N != 2 {
		t.Fatalf("%d channels, %d images", d.C, d.N)
	}
	// Gray keeps its values exactly; RGB becomes 0.299R + 0.587G + 0.114B.
	if d.Images[0] != -1 || d.Images[1] != value(77) {
		t.Errorf("gray image read as %v, want [-1 %v]", d.Images[:2], value(77))
	}
	y := 0.299*200 + 0.587*100 + 0.114*50
	if got := d.Image(1)[0]; !near(got, float32(y/127.5-1), 1/127.5) {
		t.Errorf("luma of (200,100,50) = %v, want %v", got, y/127.5-1)
	}
	if got := d.Image(1)[1]; got != 1 {
		t.Errorf("luma of white = %v, want 1", got)
	}

	// Gray read as RGB repeats the plane.
	d, err = ReadImageFolder(dir, 2, 3)
	if err != nil {
		t.Fatal(err)
	}
	img := d.Image(0)
	for c := range 3 {
		if img[4*c] != -1 || img[4*c+1] != value(77) {
			t.Errorf("channel %d of gray image = %v", c, img[4*c:4*c+4])
		}
	}
}

func TestReadImageFolderTransparent(t *testing.T) {
	dir := t.TempDir()
	writePNG(t, filepath.Join(dir, "a.png"), halves(2, 2, color.NRGBA{0, 0, 0, 0}, color.NRGBA{0, 0, 0, 255}))
	d, err := ReadImageFolder(dir, 2, 1)
	if err != nil {
		t.Fatal(err)
	}
	if d.Images[0] != 1 || d.Images[1] != -1 {
		t.Errorf("transparent|black read as %v, want white (1) then black (-1)", d.Images[:2])
	}
}

func TestFitImageGeometry(t *testing.T) {
	wide := halves(40, 20, red, blue) // left half red, right half blue
	tall := image.NewNRGBA(image.Rect(0, 0, 20, 40))
	for y := range 40 {
		for x := range 20 {
			if y < 20 {
				tall.SetNRGBA(x, y, red)
			} else {
				tall.SetNRGBA(x, y, blue)
			}
		}
	}
	type check struct {
		x, y int
		c    color.NRGBA
	}
	for _, tc := range []struct {
		name   string
		src    image.Image
		size   int
		checks []check
	}{
		// 40×20 at 20: no scaling; the crop is columns 10-29, so the left
		// half of the result is red and the right half blue, exactly.
		{"wide crop", wide, 20, []check{{0, 0, red}, {9, 19, red}, {10, 0, blue}, {19, 19, blue}}},
		// 40×20 at 10: scaled to 20×10, cropped to columns 5-14; only the
		// two columns at the seam mix.
		{"wide scale", wide, 10, []check{{0, 0, red}, {3, 9, red}, {6, 0, blue}, {9, 9, blue}}},
		{"tall crop", tall, 20, []check{{0, 0, red}, {19, 9, red}, {0, 10, blue}, {19, 19, blue}}},
		{"tall scale", tall, 10, []check{{0, 0, red}, {9, 3, red}, {0, 6, blue}, {9, 9, blue}}},
		// 40×20 at 30: scaled up to 60×30, cropped to columns 15-44.
		{"wide up", wide, 30, []check{{0, 0, red}, {13, 29, red}, {16, 0, blue}, {29, 29, blue}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := fitImage(tc.src, tc.size)
			if b := m.Bounds(); b != image.Rect(0, 0, tc.size, tc.size) {
				t.Fatalf("bounds %v", b)
			}
			for _, c := range tc.checks {
				if got := m.RGBAAt(c.x, c.y); got.R != c.c.R || got.G != c.c.G || got.B != c.c.B || got.A != 255 {
					t.Errorf("pixel (%d,%d) = %v, want %v", c.x, c.y, got, c.c)
				}
			}
		})
	}
}

func TestReadImageFolderErrors(t *testing.T) {
	root := t.TempDir()
	missing := filepath.Join(root, "missing")
	file := writeFile(t, filepath.Join(root, "file.png"), []byte("x"))
	empty := filepath.Join(root, "empty")
	writeFile(t, filepath.Join(empty, "notes.txt"), []byte("x"))
	corrupt := filepath.Join(root, "corrupt")
	writePNG(t, filepath.Join(corrupt, "a", "good.png"), solid(4, 4, red))
	bad := writeFile(t, filepath.Join(corrupt, "b", "bad.jpg"), []byte("not a jpeg at all"))
	for _, tc := range []struct {
		name     string
		dir      string
		size, ch int
		target   error
		parts    []string
	}{
		{"missing", missing, 8, 3, ErrNotFound, []string{"data: no such file or directory: " + missing}},
		{"not a directory", file, 8, 3, ErrFormat, []string{file, "not a directory"}},
		{"no images", empty, 8, 3, ErrNoImages, []string{empty, "no images", ".png"}},
		{"corrupt", corrupt, 8, 3, ErrFormat, []string{bad, "cannot decode image"}},
		{"size", corrupt, 0, 3, nil, []string{"size must be positive"}},
		{"channels", corrupt, 8, 2, nil, []string{"channels must be 1 or 3, got 2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadImageFolder(tc.dir, tc.size, tc.ch)
			checkErr(t, err, tc.target, tc.parts...)
		})
	}
}

// A PNG whose header declares a huge size (a decompression bomb of a few
// hundred bytes) is refused by name before it is decoded.
func TestReadImageFolderRefusesBombs(t *testing.T) {
	b := pngDeclaring(t, 100000, 100000)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "bomb.png"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := ReadImageFolder(dir, 16, 1)
	if err == nil || !strings.Contains(err.Error(), "bomb.png") || !strings.Contains(err.Error(), "100000x100000") {
		t.Fatalf("ReadImageFolder = %v, want a refusal naming the file and its size", err)
	}
}
