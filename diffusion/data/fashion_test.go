package data

import (
	"os"
	"path/filepath"
	"testing"
)

func skipWithoutFashionMNIST(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(FashionMNISTDir, "t10k-images-idx3-ubyte.gz")); err != nil {
		if _, err := os.Stat(filepath.Join(FashionMNISTDir, "t10k-images-idx3-ubyte")); err != nil {
			t.Skip("fashion-mnist is not installed (apt-get install dataset-fashion-mnist)")
		}
	}
}

func TestFashionMNISTTest(t *testing.T) {
	skipWithoutFashionMNIST(t)
	d, err := FashionMNIST("test")
	if err != nil {
		t.Fatal(err)
	}
	if d.N != 10000 || d.C != 1 || d.H != 28 || d.W != 28 || len(d.Images) != 10000*28*28 {
		t.Fatalf("shape %dx%dx%dx%d, want 10000x1x28x28", d.N, d.C, d.H, d.W)
	}
	counts := make([]int, 10)
	for _, l := range d.Labels {
		if l < 0 || l > 9 {
			t.Fatalf("label %d out of 0..9", l)
		}
		counts[l]++
	}
	for c, n := range counts {
		if n != 1000 {
			t.Errorf("class %d has %d images, want 1000", c, n)
		}
	}
	if d.NumClasses != 10 || d.ClassNames[0] != "T-shirt/top" || d.ClassNames[9] != "Ankle boot" {
		t.Errorf("classes %d %q", d.NumClasses, d.ClassNames)
	}
	lo, hi := d.Images[0], d.Images[0]
	for _, v := range d.Images {
		lo, hi = min(lo, v), max(hi, v)
	}
	if lo != -1 || hi != 1 {
		t.Errorf("values span [%v, %v], want [-1, 1]", lo, hi)
	}
}

func TestOpenFashionMNIST(t *testing.T) {
	skipWithoutFashionMNIST(t)
	if testing.Short() {
		t.Skip("reads the 60000 training images")
	}
	d, err := Open(FashionMNISTDir, 32, 1)
	if err != nil {
		t.Fatal(err)
	}
	if d.N != 60000 || d.H != 32 || d.W != 32 || d.ClassNames[3] != "Dress" {
		t.Errorf("shape %dx%dx%dx%d classes %q", d.N, d.C, d.H, d.W, d.ClassNames)
	}
}

func TestFashionMNISTErrors(t *testing.T) {
	_, err := FashionMNIST("validation")
	checkErr(t, err, nil, `unknown fashion-mnist split "validation"`)
	dir := t.TempDir()
	_, err = readFashionMNIST(dir, "train")
	checkErr(t, err, ErrNotFound, "data: no such file or directory: "+filepath.Join(dir, "train-images-idx3-ubyte.gz"),
		"apt-get install dataset-fashion-mnist", "--data")

	// A stand-in with the Debian layout reads with the class names.
	writeFile(t, filepath.Join(dir, "t10k-images-idx3-ubyte.gz"), gzipBytes(t, idxImages(2, 28, 28, pattern(2*28*28))))
	writeFile(t, filepath.Join(dir, "t10k-labels-idx1-ubyte.gz"), gzipBytes(t, idxLabels([]byte{9, 0})))
	d, err := readFashionMNIST(dir, "test")
	if err != nil {
		t.Fatal(err)
	}
	if d.N != 2 || d.NumClasses != 10 || d.ClassNames[d.Labels[0]] != "Ankle boot" {
		t.Errorf("N=%d classes %d %q", d.N, d.NumClasses, d.ClassNames)
	}
	_, err = readFashionMNIST(dir, "train")
	checkErr(t, err, ErrNotFound)
}
