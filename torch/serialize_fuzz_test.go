package torch

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
)

// FuzzLoadSafetensors loads arbitrary files into tensors: an error or
// tensors whose shape, dtype and bytes read back, never a crash, and a scope
// that a bad file leaves usable.
func FuzzLoadSafetensors(f *testing.F) {
	file := func(header string, data []byte) []byte {
		b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
		return append(append(b, header...), data...)
	}
	f.Add(file(`{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, make([]byte, 8)))
	f.Add(file(`{"b":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}}`, []byte{1, 2}))
	f.Add(file(`{"h":{"dtype":"BF16","shape":[1,1],"data_offsets":[0,2]},"__metadata__":{"k":"v"}}`, []byte{0x80, 0x3f}))
	f.Add(file(`{"z":{"dtype":"I64","shape":[0,3],"data_offsets":[0,0]}}`, nil))
	f.Add(file(`{"u":{"dtype":"U8","shape":[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1],"data_offsets":[0,1]}}`, []byte{7}))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		p := filepath.Join(dir, "f.safetensors")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		s := NewScope(NoGrad)
		defer s.Close()
		ts, _, err := s.LoadSafetensors(p, CPU)
		if s.Err() != nil {
			t.Fatalf("a bad file failed the scope: %v", s.Err())
		}
		if err != nil {
			return
		}
		for name, x := range ts {
			m, err := x.Meta()
			if err != nil {
				t.Fatalf("tensor %q loaded but has no metadata: %v", name, err)
			}
			raw, err := x.Bytes()
			if err != nil || int64(len(raw)) != numel(m.Shape)*int64(m.DType.Size()) {
				t.Fatalf("tensor %q: %d bytes, %v; shape %v of %v", name, len(raw), err, m.Shape, m.DType)
			}
			if m.DType == Bool {
				if _, err := x.Bools(); err != nil {
					t.Fatalf("tensor %q: %v", name, err)
				}
			}
		}
	})
}
