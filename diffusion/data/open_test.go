package data

import (
	"io/fs"
	"path/filepath"
	"testing"
)

// mnistDir writes a small MNIST-style training split of n 28×28 images.
func mnistDir(t *testing.T, n int, gz bool) (dir string, pix []byte) {
	t.Helper()
	dir = t.TempDir()
	pix = pattern(n * 28 * 28)
	labels := make([]byte, n)
	for i := range labels {
		labels[i] = byte(i % 10)
	}
	ib, lb := idxImages(n, 28, 28, pix), idxLabels(labels)
	in, ln := "train-images-idx3-ubyte", "train-labels-idx1-ubyte"
	if gz {
		ib, lb, in, ln = gzipBytes(t, ib), gzipBytes(t, lb), in+".gz", ln+".gz"
	}
	writeFile(t, filepath.Join(dir, in), ib)
	writeFile(t, filepath.Join(dir, ln), lb)
	writeFile(t, filepath.Join(dir, "t10k-images-idx3-ubyte"), idxImages(1, 28, 28, pattern(28*28)))
	return dir, pix
}

func TestOpenIDXPadsTo32(t *testing.T) {
	dir, pix := mnistDir(t, 3, true)
	d, err := Open(dir, 32, 1)
	if err != nil {
		t.Fatal(err)
	}
	if d.N != 3 || d.C != 1 || d.H != 32 || d.W != 32 || len(d.Images) != 3*32*32 {
		t.Fatalf("shape %dx%dx%dx%d, want 3x1x32x32", d.N, d.C, d.H, d.W)
	}
	if d.Labels[2] != 2 || d.NumClasses != 3 {
		t.Errorf("labels %v, NumClasses %d", d.Labels, d.NumClasses)
	}
	for i := range d.N {
		img := d.Image(i)
		for y := range 32 {
			for x := range 32 {
				got := img[y*32+x]
				want := float32(-1)
				if x >= 2 && x < 30 && y >= 2 && y < 30 {
					want = value(pix[(i*28+y-2)*28+x-2])
				}
				if got != want {
					t.Fatalf("image %d pixel (%d,%d) = %v, want %v", i, x, y, got, want)
				}
			}
		}
	}
}

func TestOpenIDX(t *testing.T) {
	dir, pix := mnistDir(t, 4, false)
	t.Run("native size", func(t *testing.T) {
		for _, size := range []int{0, 28} {
			d, err := Open(dir, size, 0)
			if err != nil {
				t.Fatal(err)
			}
			if d.H != 28 || d.W != 28 || d.C != 1 || d.N != 4 || d.Images[5] != value(pix[5]) {
				t.Errorf("size %d: shape %dx%dx%dx%d", size, d.N, d.C, d.H, d.W)
			}
		}
	})
	t.Run("file with sibling labels", func(t *testing.T) {
		d, err := Open(filepath.Join(dir, "train-images-idx3-ubyte"), 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(d.Labels) != 4 || d.Labels[3] != 3 {
			t.Errorf("labels %v", d.Labels)
		}
	})
	t.Run("file without labels", func(t *testing.T) {
		d, err := Open(filepath.Join(dir, "t10k-images-idx3-ubyte"), 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if d.N != 1 || d.Labels != nil {
			t.Errorf("N=%d labels %v", d.N, d.Labels)
		}
	})
	t.Run("resize", func(t *testing.T) {
		d, err := Open(dir, 14, 1)
		if err != nil {
			t.Fatal(err)
		}
		if d.H != 14 || d.W != 14 || len(d.Images) != 4*14*14 {
			t.Errorf("shape %dx%dx%dx%d", d.N, d.C, d.H, d.W)
		}
		d, err = Open(dir, 64, 1)
		if err != nil {
			t.Fatal(err)
		}
		if d.H != 64 || d.W != 64 || len(d.Images) != 4*64*64 {
			t.Errorf("resize to 64: shape %dx%dx%dx%d", d.N, d.C, d.H, d.W)
		}
	})
	t.Run("three channels", func(t *testing.T) {
		d, err := Open(dir, 32, 3)
		if err != nil {
			t.Fatal(err)
		}
		if d.C != 3 || len(d.Images) != 4*3*32*32 {
			t.Fatalf("shape %dx%dx%dx%d", d.N, d.C, d.H, d.W)
		}
		img := d.Image(1)
		for c := range 3 {
			if img[c*1024] != -1 || img[c*1024+2*32+2] != value(pix[28*28]) {
				t.Errorf("channel %d not a copy of the padded gray image", c)
			}
		}
	})
}

func TestOpenCIFAR(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "data_batch_2.bin"), cifarFile([]byte{5}, 7))
	one := writeFile(t, filepath.Join(dir, "data_batch_1.bin"), cifarFile([]byte{1, 2}, 0))
	writeFile(t, filepath.Join(dir, "test_batch.bin"), cifarFile([]byte{9}, 0))
	t.Run("directory", func(t *testing.T) {
		d, err := Open(dir, 32, 3)
		if err != nil {
			t.Fatal(err)
		}
		if d.N != 3 || d.Labels[0] != 1 || d.Labels[2] != 5 || d.ClassNames[5] != "dog" {
			t.Errorf("N=%d labels %v", d.N, d.Labels)
		}
	})
	t.Run("parent directory", func(t *testing.T) {
		parent := t.TempDir()
		writeFile(t, filepath.Join(parent, "cifar-10-batches-bin", "data_batch_1.bin"), cifarFile([]byte{4}, 0))
		d, err := Open(parent, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if d.N != 1 || d.Labels[0] != 4 {
			t.Errorf("N=%d labels %v", d.N, d.Labels)
		}
	})
	t.Run("file", func(t *testing.T) {
		d, err := Open(one, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if d.N != 2 || d.C != 3 || d.H != 32 {
			t.Errorf("shape %dx%dx%dx%d", d.N, d.C, d.H, d.W)
		}
	})
	t.Run("luma", func(t *testing.T) {
		rgb, err := Open(one, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		d, err := Open(one, 0, 1)
		if err != nil {
			t.Fatal(err)
		}
		if d.C != 1 || d.H != 32 || len(d.Images) != 2*32*32 {
			t.Fatalf("shape %dx%dx%dx%d", d.N, d.C, d.H, d.W)
		}
		for _, o := range []int{0, 100, 1023} {
			img := rgb.Image(1)
			r, g, b := img[o], img[1024+o], img[2048+o]
			want := 0.299*r + 0.587*g + 0.114*b
			if got := d.Image(1)[o]; !near(got, want, 1.0/127.5) {
				t.Errorf("pixel %d: luma %v, want %v", o, got, want)
			}
		}
	})
	t.Run("resize", func(t *testing.T) {
		d, err := Open(one, 16, 0)
		if err != nil {
			t.Fatal(err)
		}
		if d.C != 3 || d.H != 16 || d.W != 16 || len(d.Images) != 2*3*16*16 {
			t.Errorf("shape %dx%dx%dx%d", d.N, d.C, d.H, d.W)
		}
	})
}

func TestOpenImageFolder(t *testing.T) {
	dir := t.TempDir()
	writePNG(t, filepath.Join(dir, "a.png"), halves(40, 20, red, blue))
	writeJPEG(t, filepath.Join(dir, "b.jpeg"), solid(64, 64, green))
	d, err := Open(dir, 20, 0)
	if err != nil {
		t.Fatal(err)
	}
	if d.N != 2 || d.C != 3 || d.H != 20 || d.Labels != nil {
		t.Fatalf("shape %dx%dx%dx%d labels %v", d.N, d.C, d.H, d.W, d.Labels)
	}
	if got := pixel(d.Image(0), 3, 20, 0, 0); got[0] != 1 || got[2] != -1 {
		t.Errorf("left pixel %v, want red", got)
	}
	if got := pixel(d.Image(0), 3, 20, 19, 0); got[0] != -1 || got[2] != 1 {
		t.Errorf("right pixel %v, want blue", got)
	}
}

func TestOpenErrors(t *testing.T) {
	root := t.TempDir()
	missing := filepath.Join(root, "nope")
	png := writePNG(t, filepath.Join(root, "picture.png"), solid(2, 2, red))
	folder := filepath.Join(root, "folder")
	writePNG(t, filepath.Join(folder, "a.png"), solid(2, 2, red))
	empty := filepath.Join(root, "empty")
	writeFile(t, filepath.Join(empty, "readme.txt"), []byte("x"))
	for _, tc := range []struct {
		name     string
		path     string
		size, ch int
		target   error
		parts    []string
	}{
		{"missing", missing, 32, 1, ErrNotFound, []string{"data: no such file or directory: " + missing}},
		{"not idx", png, 32, 1, ErrFormat, []string{png, "magic number"}},
		{"folder needs size", folder, 0, 3, nil, []string{folder, "needs an image size"}},
		{"channels", folder, 8, 4, nil, []string{"channels must be 1 or 3"}},
		{"size", folder, -1, 3, nil, []string{"size must not be negative"}},
		{"empty folder", empty, 8, 3, ErrNoImages, []string{empty, "no images"}},
		{"missing matches fs.ErrNotExist", missing, 0, 0, fs.ErrNotExist, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Open(tc.path, tc.size, tc.ch)
			checkErr(t, err, tc.target, tc.parts...)
		})
	}
}
