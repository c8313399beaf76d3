package safetensors_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/ddpm-go/ddpm/torch/safetensors"
)

func FuzzParseHeader(f *testing.F) {
	path := filepath.Join(f.TempDir(), "seed.safetensors")
	tensors := []safetensors.Tensor{
		{Name: "w", DType: safetensors.F32, Shape: []int64{2, 3}, Data: make([]byte, 24)},
		{Name: "b", DType: safetensors.F64, Shape: []int64{}, Data: make([]byte, 8)},
		{Name: "e", DType: safetensors.I64, Shape: []int64{0, 2}, Data: nil},
		{Name: "m", DType: safetensors.Bool, Shape: []int64{3}, Data: []byte{1, 0, 1}},
	}
	if err := safetensors.Write(path, tensors, map[string]string{"format": "pt"}); err != nil {
		f.Fatal(err)
	}
	valid, err := os.ReadFile(path)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	f.Add(valid[:len(valid)-1])
	f.Add(rawFile(`{}`, nil))
	f.Add(rawFile(`{"__metadata__":{"k":"v"},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}`, []byte{1}))
	f.Add(rawFile(`{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}`, d(8)))
	f.Add([]byte{})

	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := safetensors.ParseHeader(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			if !errors.Is(err, safetensors.ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		// An accepted header must describe the input exactly.
		if h.DataStart < 8 || h.DataStart > int64(len(data)) {
			t.Fatalf("DataStart %d outside file of %d bytes", h.DataStart, len(data))
		}
		var pos int64
		seen := map[string]bool{}
		for _, e := range h.Entries {
			if e.Begin != pos || e.End < e.Begin {
				t.Fatalf("entries do not tile the data section: %+v", h.Entries)
			}
			if seen[e.Name] {
				t.Fatalf("duplicate entry %q accepted", e.Name)
			}
			seen[e.Name] = true
			size, err := e.DType.Size()
			if err != nil {
				t.Fatalf("accepted unknown dtype %q", e.DType)
			}
			n := int64(size)
			for _, d := range e.Shape {
				if d < 0 {
					t.Fatalf("accepted negative dim in %v", e.Shape)
				}
				n *= d
			}
			if e.End-e.Begin != n {
				t.Fatalf("entry %q spans %d bytes, shape needs %d", e.Name, e.End-e.Begin, n)
			}
			pos = e.End
		}
		if h.DataStart+pos != int64(len(data)) {
			t.Fatalf("data section of %d bytes, tensors cover %d", int64(len(data))-h.DataStart, pos)
		}
	})
}
