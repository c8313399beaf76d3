package metrics

import "testing"

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
