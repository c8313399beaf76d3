package data

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadIDX(t *testing.T) {
	const n, rows, cols = 3, 4, 5
	pix := pattern(n * rows * cols)
	pix[0], pix[1], pix[2] = 0, 255, 128
	labels := []byte{7, 0, 3}
	for _, tc := range []struct {
		name         string
		gzip         bool
		images, lbls string
	}{
		{"plain", false, "images-idx3-ubyte", "labels-idx1-ubyte"},
		{"gzipped", true, "images-idx3-ubyte.gz", "labels-idx1-ubyte.gz"},
		{"gzipped without .gz", true, "images", "labels"},
		{"plain named .gz", false, "images.gz", "labels.gz"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			ib, lb := idxImages(n, rows, cols, pix), idxLabels(labels)
			if tc.gzip {
				ib, lb = gzipBytes(t, ib), gzipBytes(t, lb)
			}
			ip := writeFile(t, filepath.Join(dir, tc.images), ib)
			lp := writeFile(t, filepath.Join(dir, tc.lbls), lb)
			d, err := ReadIDX(ip, lp)
			if err != nil {
				t.Fatal(err)
			}
			if d.N != n || d.C != 1 || d.H != rows || d.W != cols || len(d.Images) != n*rows*cols {
				t.Fatalf("shape %dx%dx%dx%d (%d values), want %dx1x%dx%d", d.N, d.C, d.H, d.W, len(d.Images), n, rows, cols)
			}
			if d.Images[0] != -1 || d.Images[1] != 1 {
				t.Errorf("bytes 0 and 255 read as %v and %v, want -1 and 1", d.Images[0], d.Images[1])
			}
			for i, v := range pix {
				if want := float32(float64(v)/127.5 - 1); d.Images[i] != want {
					t.Fatalf("value %d: byte %d read as %v, want %v", i, v, d.Images[i], want)
				}
			}
			for i, l := range labels {
				if d.Labels[i] != int64(l) {
					t.Errorf("label %d = %d, want %d", i, d.Labels[i], l)
				}
			}
			if d.NumClasses != 8 {
				t.Errorf("NumClasses = %d, want 8 (largest label + 1)", d.NumClasses)
			}
			if d.Source != ip {
				t.Errorf("Source = %q, want %q", d.Source, ip)
			}
		})
	}
}

func TestReadIDXWithoutLabels(t *testing.T) {
	p := writeFile(t, filepath.Join(t.TempDir(), "x-idx3-ubyte"), idxImages(2, 2, 2, pattern(8)))
	d, err := ReadIDX(p, "")
	if err != nil {
		t.Fatal(err)
	}
	if d.N != 2 || d.Labels != nil || d.NumClasses != 0 {
		t.Errorf("N=%d Labels=%v NumClasses=%d, want 2 images and no labels", d.N, d.Labels, d.NumClasses)
	}
}

func TestReadIDXErrors(t *testing.T) {
	dir := t.TempDir()
	good := writeFile(t, filepath.Join(dir, "good-images"), idxImages(3, 4, 5, pattern(60)))
	goodLabels := writeFile(t, filepath.Join(dir, "good-labels"), idxLabels([]byte{1, 2, 3}))
	full := gzipBytes(t, idxImages(3, 4, 5, pattern(60)))
	bad := func(name string, b []byte) string { return writeFile(t, filepath.Join(dir, name), b) }
	missing := filepath.Join(dir, "missing")
	for _, tc := range []struct {
		name           string
		images, labels string
		target         error
		parts          []string
	}{
		{"missing images", missing, "", ErrNotFound, []string{"data: no such file or directory: " + missing}},
		{"missing labels", good, missing, ErrNotFound, []string{"no such file or directory: " + missing}},
		{"labels as images", goodLabels, "", ErrFormat, []string{goodLabels, "magic number is 0x00000801, want 0x00000803", "labels file"}},
		{"images as labels", good, good, ErrFormat, []string{good, "magic number is 0x00000803, want 0x00000801"}},
		{"wrong magic", bad("png", []byte("\x89PNG\r\n\x1a\nxxxxxxxxxxxxxxxx")), "", ErrFormat, []string{"magic number is 0x89504e47"}},
		{"short magic", bad("short", []byte{0, 0}), "", ErrTruncated, []string{"file has 2 bytes"}},
		{"short header", bad("header", idxImages(3, 4, 5, nil)[:10]), "", ErrTruncated, []string{"file has 10 bytes", "16-byte header"}},
		{"truncated", bad("trunc", idxImages(60000, 28, 28, pattern(1000))), "", ErrTruncated,
			[]string{"truncated: header says 60000 images of 28x28 but file has 1016 bytes"}},
		{"truncated gzipped", bad("trunc.gz", gzipBytes(t, idxImages(60000, 28, 28, pattern(1000)))), "", ErrTruncated,
			[]string{"header says 60000 images of 28x28 but file has 1016 bytes once decompressed"}},
		{"huge dims", bad("huge", idxImages(1<<31, 1<<31, 1<<31, nil)), "", ErrTruncated, []string{"header says 2147483648 images"}},
		{"extra bytes", bad("extra", idxImages(3, 4, 5, pattern(61))), "", ErrFormat, []string{"76 bytes with the header", "file has 77 bytes"}},
		{"zero dims", bad("zero", idxImages(3, 0, 5, nil)), "", ErrFormat, []string{"3 images of 0x5", "must be positive"}},
		{"label count", good, bad("labels2", idxLabels([]byte{1, 2})), ErrFormat, []string{"2 labels but " + good + " has 3 images"}},
		{"labels truncated", good, bad("labels3", idxLabels([]byte{1, 2, 3})[:10]), ErrTruncated, []string{"header says 3 labels but file has 10 bytes"}},
		{"labels extra", good, bad("labels4", append(idxLabels([]byte{1, 2, 3}), 9)), ErrFormat, []string{"header says 3 labels (11 bytes with the header)"}},
		{"gzip cut short", bad("cut.gz", full[:len(full)-12]), "", ErrTruncated, []string{"gzip stream ends early"}},
		{"gzip corrupt", bad("corrupt.gz", append([]byte{0x1f, 0x8b, 99}, full[3:]...)), "", ErrFormat, []string{"corrupt gzip data"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := ReadIDX(tc.images, tc.labels)
			if d != nil {
				t.Errorf("got a dataset with an error")
			}
			checkErr(t, err, tc.target, tc.parts...)
		})
	}
}

func TestFileError(t *testing.T) {
	cause := fmt.Errorf("open x: %w", fs.ErrNotExist)
	err := error(&FileError{Path: "x", Err: ErrNotFound, Cause: cause})
	if err.Error() != "data: no such file or directory: x" {
		t.Errorf("message %q", err)
	}
	if !errors.Is(err, fs.ErrNotExist) || !errors.Is(err, ErrNotFound) {
		t.Errorf("%v does not match ErrNotFound and fs.ErrNotExist", err)
	}
	err = &FileError{Path: "y", Err: ErrTruncated, Detail: "header says more"}
	if err.Error() != "data: y: truncated: header says more" {
		t.Errorf("message %q", err)
	}
	if !errors.Is(err, ErrFormat) {
		t.Errorf("%v does not match ErrFormat", err)
	}
	var fe *FileError
	if !errors.As(err, &fe) || fe.Path != "y" {
		t.Errorf("errors.As gives %v", fe)
	}
}

// A small gzip file that inflates far beyond what its header claims stops
// inflating at the claim: the error comes without reading the rest.
func TestIDXBombStopsAtTheClaimedSize(t *testing.T) {
	body := append(idxImages(1, 2, 2, []byte{1, 2, 3, 4}), make([]byte, 256<<20)...) // 256 MiB of zeros
	path := filepath.Join(t.TempDir(), "train-images-idx3-ubyte.gz")
	writeFile(t, path, gzipBytes(t, body))
	b, gz, err := readFile(path, idxImagesSize)
	if err != nil || !gz || len(b) != 16+4+1 {
		t.Fatalf("read %d bytes (gzip %v, %v), want the claimed 20 and one more", len(b), gz, err)
	}
	if _, err := ReadIDX(path, ""); err == nil || !strings.Contains(err.Error(), "header says 1 images of 2x2") {
		t.Errorf("ReadIDX = %v", err)
	}
}
