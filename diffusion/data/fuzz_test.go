package data

import (
	"os"
	"path/filepath"
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
