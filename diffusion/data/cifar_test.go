package data

import (
	"path/filepath"
	"testing"
)

// cifarFile encodes CIFAR-10 records with the given labels; pixel j of
// record r is pattern byte r*3072+j offset by seed.
func cifarFile(labels []byte, seed int) []byte {
	var b []byte
	for r, l := range labels {
		b = append(b, l)
		for j := range cifarPixels {
			b = append(b, byte(seed+r*cifarPixels+j*5))
		}
	}
	return b
}

func TestReadCIFAR10(t *testing.T) {
	dir := t.TempDir()
	a := writeFile(t, filepath.Join(dir, "data_batch_1.bin"), cifarFile([]byte{0, 9, 4}, 0))
	b := writeFile(t, filepath.Join(dir, "data_batch_2.bin"), cifarFile([]byte{1, 2}, 100))
	d, err := ReadCIFAR10(a, b)
	if err != nil {
		t.Fatal(err)
	}
	if d.N != 5 || d.C != 3 || d.H != 32 || d.W != 32 || len(d.Images) != 5*3072 {
		t.Fatalf("shape %dx%dx%dx%d, want 5x3x32x32", d.N, d.C, d.H, d.W)
	}
	wantLabels := []int64{0, 9, 4, 1, 2}
	for i, l := range wantLabels {
		if d.Labels[i] != l {
			t.Errorf("label %d = %d, want %d", i, d.Labels[i], l)
		}
	}
	if d.NumClasses != 10 || len(d.ClassNames) != 10 || d.ClassNames[0] != "airplane" || d.ClassNames[9] != "truck" {
		t.Errorf("classes %d %v", d.NumClasses, d.ClassNames)
	}
	// Image 3 is record 0 of the second file; its pixels are planar R, G, B.
	img := d.Image(3)
	for _, j := range []int{0, 1, 31, 32, 1023, 1024, 2048, 3071} {
		v := byte(100 + j*5)
		if want := float32(float64(v)/127.5 - 1); img[j] != want {
			t.Errorf("image 3 value %d = %v, want %v (byte %d)", j, img[j], want, v)
		}
	}
}

func TestReadCIFAR10Errors(t *testing.T) {
	dir := t.TempDir()
	good := writeFile(t, filepath.Join(dir, "good.bin"), cifarFile([]byte{3}, 0))
	short := writeFile(t, filepath.Join(dir, "short.bin"), cifarFile([]byte{3, 4}, 0)[:5000])
	label := writeFile(t, filepath.Join(dir, "label.bin"), cifarFile([]byte{3, 10}, 0))
	empty := writeFile(t, filepath.Join(dir, "empty.bin"), nil)
	missing := filepath.Join(dir, "missing.bin")
	for _, tc := range []struct {
		name   string
		paths  []string
		target error
		parts  []string
	}{
		{"none", nil, nil, []string{"no CIFAR-10 batch files"}},
		{"missing", []string{good, missing}, ErrNotFound, []string{"no such file or directory: " + missing}},
		{"size", []string{short}, ErrFormat, []string{short, "file has 5000 bytes, not a multiple of 3073"}},
		{"label", []string{good, label}, ErrFormat, []string{label, "record 1 has label 10, want 0-9"}},
		{"empty", []string{empty}, ErrNoImages, []string{empty, "empty"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadCIFAR10(tc.paths...)
			checkErr(t, err, tc.target, tc.parts...)
		})
	}
}
