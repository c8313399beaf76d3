package npy

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/internal/pyref"
)

// TestNumpyReads writes arrays of both dtypes and shapes of rank 1 to 4
// and has numpy read them back: shape, dtype and every value.
func TestNumpyReads(t *testing.T) {
	py := pyref.Require(t, "import numpy")
	dir := t.TempDir()
	f32 := []float32{-1, 0.5, 3.25, 1e-7, -2.5e9, 0}
	f64 := []float64{1.0 / 3, -7, 2e300}
	write := func(name string, f func(w *bytes.Buffer) error) {
		var b bytes.Buffer
		if err := f(&b); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("a.npy", func(b *bytes.Buffer) error { return WriteFloat32(b, []int{1, 2, 3, 1}, f32) })
	write("b.npy", func(b *bytes.Buffer) error { return WriteFloat64(b, []int{3}, f64) })
	code := `
import numpy as np, sys
a = np.load(sys.argv[1] + "/a.npy"); b = np.load(sys.argv[1] + "/b.npy")
print(a.dtype, a.shape, " ".join(repr(float(v)) for v in a.ravel()))
print(b.dtype, b.shape, " ".join(repr(float(v)) for v in b.ravel()))
`
	out, err := exec.Command(py, "-c", code, dir).CombinedOutput()
	if err != nil {
		t.Fatalf("numpy: %v\n%s", err, out)
	}
	want := "float32 (1, 2, 3, 1) -1.0 0.5 3.25 1.0000000116860974e-07 -2500000000.0 0.0\n" +
		"float64 (3,) 0.3333333333333333 -7.0 2e+300\n"
	if string(out) != want {
		t.Errorf("numpy read\n%s\nwant\n%s", out, want)
	}
}

// TestDataAligned checks numpy's layout rule: the data starts on a 64-byte
// boundary after a header that ends in a newline.
func TestDataAligned(t *testing.T) {
	for _, shape := range [][]int{{}, {7}, {2, 3}, {10000, 3, 64, 64}} {
		var b bytes.Buffer
		if err := writeHeader(&b, "<f4", shape); err != nil {
			t.Fatal(err)
		}
		if b.Len()%align != 0 || !strings.HasSuffix(b.String(), "\n") {
			t.Errorf("shape %v: header of %d bytes", shape, b.Len())
		}
	}
}

func TestShapeMismatch(t *testing.T) {
	var b bytes.Buffer
	if err := WriteFloat32(&b, []int{2, 2}, []float32{1, 2, 3}); err == nil || !strings.Contains(err.Error(), "holds 4 values, got 3") {
		t.Errorf("got %v", err)
	}
	if err := WriteFloat64(&b, []int{-1}, nil); err == nil {
		t.Error("negative dimension accepted")
	}
}
