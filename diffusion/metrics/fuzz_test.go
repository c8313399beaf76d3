package metrics

import (
	"archive/zip"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The .npy reader takes any bytes without panicking, and what it accepts
// has as many values as its shape says.
func FuzzDecodeNPY(f *testing.F) {
	f.Add([]byte("\x93NUMPY\x01\x00v\x00{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }" + "                                          \n" + "\x00\x00\x00\x00\x00\x00\xf0\x3f\x00\x00\x00\x00\x00\x00\x00\x40"))
	f.Add([]byte("\x93NUMPY\x02\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := decodeNPY("x.npy", b)
		if err != nil {
			return
		}
		n := 1
		for _, d := range a.shape {
			n *= d
		}
		if n != len(a.data) {
			t.Fatalf("shape %v but %d values", a.shape, len(a.data))
		}
	})
}

// The .npz reader takes any file without panicking, and what it accepts
// is a mean of d values with a d x d covariance.
func FuzzReadNPZ(f *testing.F) {
	var good bytes.Buffer
	zw := zip.NewWriter(&good)
	for name, npy := range map[string]string{
		muEntry:    "\x93NUMPY\x01\x00v\x00{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }" + strings.Repeat(" ", 60) + "\n" + "\x00\x00\x00\x00\x00\x00\xf0\x3f",
		sigmaEntry: "\x93NUMPY\x01\x00v\x00{'descr': '<f8', 'fortran_order': False, 'shape': (1, 1), }" + strings.Repeat(" ", 58) + "\n" + "\x00\x00\x00\x00\x00\x00\xf0\x3f",
	} {
		w, _ := zw.Create(name)
		w.Write([]byte(npy))
	}
	zw.Close()
	f.Add(good.Bytes())
	f.Add([]byte("PK\x03\x04"))
	dir := f.TempDir()
	seed := filepath.Join(dir, "seed.npz")
	if err := os.WriteFile(seed, good.Bytes(), 0o644); err != nil {
		f.Fatal(err)
	}
	if s, err := ReadNPZ(seed); err != nil || s.Mu[0] != 1 {
		f.Fatalf("the seed archive does not read: %v", err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(dir, "x.npz")
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		s, err := ReadNPZ(path)
		if err != nil {
			return
		}
		d := len(s.Mu)
		if r, c := s.Sigma.Dims(); d == 0 || r != d || c != d {
			t.Fatalf("accepted a mean of %d values with a %dx%d covariance", d, r, c)
		}
	})
}
