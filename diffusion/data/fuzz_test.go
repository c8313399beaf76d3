package data

import (
	"bytes"
	"errors"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The IDX and CIFAR-10 readers take any bytes, plain or gzipped, without
// panicking or allocating beyond what the bytes justify.
func FuzzReadIDX(f *testing.F) {
	f.Add(idxImages(2, 3, 3, make([]byte, 18)), idxLabels([]byte{1, 2}))
	f.Add(gzipBytes(f, idxImages(1, 2, 2, []byte{1, 2, 3, 4})), gzipBytes(f, idxLabels([]byte{0})))
	f.Add([]byte{0, 0, 8, 3, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 28, 0, 0, 0, 28}, []byte{0, 0, 8, 1})
	f.Fuzz(func(t *testing.T, images, labels []byte) {
		dir := t.TempDir()
		ip, lp := filepath.Join(dir, "images"), filepath.Join(dir, "labels")
		os.WriteFile(ip, images, 0o644)
		os.WriteFile(lp, labels, 0o644)
		if d, err := ReadIDX(ip, lp); err == nil && (d.N*d.H*d.W != len(d.Images) || len(d.Labels) != d.N) {
			t.Fatalf("inconsistent dataset: N %d, %dx%d, %d values, %d labels", d.N, d.H, d.W, len(d.Images), len(d.Labels))
		}
	})
}

func FuzzReadCIFAR10(f *testing.F) {
	f.Add(make([]byte, 3073))
	f.Add(gzipBytes(f, make([]byte, 3073*2)))
	f.Fuzz(func(t *testing.T, b []byte) {
		p := filepath.Join(t.TempDir(), "data_batch_1.bin")
		os.WriteFile(p, b, 0o644)
		if d, err := ReadCIFAR10(p); err == nil && d.N*3*32*32 != len(d.Images) {
			t.Fatalf("inconsistent dataset: N %d, %d values", d.N, len(d.Images))
		}
	})
}

// An image file of any bytes, under any of the accepted extensions, goes
// through the folder reader's decode path (declared-size limit, decoding,
// resizing, channel conversion) without panicking: it is one image with
// values in [-1, 1], or an ErrFormat error naming the file. A file
// declaring more than MaxImagePixels is always refused.
func FuzzReadImageFolder(f *testing.F) {
	var png1, jpg1, gif1 bytes.Buffer
	m := halves(5, 3, red, color.NRGBA{0, 0, 255, 128})
	png.Encode(&png1, m)
	jpeg.Encode(&jpg1, m, nil)
	gif.Encode(&gif1, m, nil)
	for i, b := range [][]byte{png1.Bytes(), jpg1.Bytes(), gif1.Bytes(), pngDeclaring(f, 100000, 100000), pngDeclaring(f, 3000, 1)} {
		f.Add(b, uint8(i))
	}
	f.Fuzz(func(t *testing.T, b []byte, ext uint8) {
		dir := t.TempDir()
		name := filepath.Join(dir, "x"+imageExts[int(ext)%len(imageExts)])
		if err := os.WriteFile(name, b, 0o644); err != nil {
			t.Fatal(err)
		}
		cfg, _, cfgErr := image.DecodeConfig(bytes.NewReader(b))
		d, err := ReadImageFolder(dir, 4, 1+2*int(ext&1))
		if err != nil {
			var fe *FileError
			if !errors.As(err, &fe) || fe.Path != name || !errors.Is(err, ErrFormat) {
				t.Fatalf("error %v, want an ErrFormat naming %s", err, name)
			}
			return
		}
		if cfgErr == nil && int64(cfg.Width)*int64(cfg.Height) > MaxImagePixels {
			t.Fatalf("accepted an image declaring %dx%d", cfg.Width, cfg.Height)
		}
		if d.N != 1 || len(d.Images) != d.C*4*4 {
			t.Fatalf("N %d, %d values for %d channels", d.N, len(d.Images), d.C)
		}
		for _, v := range d.Images {
			if !(v >= -1 && v <= 1) {
				t.Fatalf("value %v outside [-1, 1]", v)
			}
		}
	})
}

// Image folder discovery over any tree of names (one path per line; a
// trailing "/" makes a directory): the files found are image files in the
// tree, in a stable order, each labelled with an existing class, or the
// error says why there are none.
func FuzzListImageFolder(f *testing.F) {
	f.Add("a.png\nb.JPG\nnotes.txt")
	f.Add("cat/1.png\ncat/.hidden.png\ndog/x/2.webp\nempty/\ntop.png")
	f.Add(".git/a.png\n.b/\nc.gif/")
	f.Fuzz(func(t *testing.T, tree string) {
		root := t.TempDir()
		for _, p := range strings.Split(tree, "\n") {
			clean := filepath.Clean("/" + p)[1:]
			if clean == "" || len(clean) > 200 || strings.ContainsRune(clean, 0) {
				continue
			}
			full := filepath.Join(root, clean)
			if strings.HasSuffix(p, "/") {
				os.MkdirAll(full, 0o755)
				continue
			}
			if os.MkdirAll(filepath.Dir(full), 0o755) == nil {
				os.WriteFile(full, nil, 0o644)
			}
		}
		files, labels, classes, err := listImageFolder(root)
		if err != nil {
			if !errors.Is(err, ErrNoImages) {
				t.Fatalf("error %v, want ErrNoImages", err)
			}
			return
		}
		if classes != nil && len(labels) != len(files) {
			t.Fatalf("%d labels for %d files", len(labels), len(files))
		}
		seen := map[string]bool{}
		for i, p := range files {
			if seen[p] || !isImageFile(p) {
				t.Fatalf("file %q listed twice or not an image file", p)
			}
			seen[p] = true
			if fi, err := os.Stat(p); err != nil || fi.IsDir() {
				t.Fatalf("listed %q, which is not a file in the tree", p)
			}
			if classes != nil {
				c := labels[i]
				if c < 0 || int(c) >= len(classes) || !strings.HasPrefix(p, filepath.Join(root, classes[c])+string(filepath.Separator)) {
					t.Fatalf("%q labelled %d of %v", p, c, classes)
				}
			}
		}
		again, _, _, _ := listImageFolder(root)
		if strings.Join(again, "\n") != strings.Join(files, "\n") {
			t.Fatal("the listing changed between two calls")
		}
	})
}
