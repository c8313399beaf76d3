package safetensors_test

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"testing"

	"github.com/ddpm-go/ddpm/torch/safetensors"
)

var allDTypes = []safetensors.DType{
	safetensors.F16, safetensors.BF16, safetensors.F32, safetensors.F64,
	safetensors.I64, safetensors.Bool, safetensors.U8, safetensors.I8,
	safetensors.I16, safetensors.I32,
}

// pattern returns n deterministic bytes derived from seed.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7+i/3)
	}
	return b
}

// makeTensor builds a tensor whose data length matches its shape.
func makeTensor(t *testing.T, name string, dt safetensors.DType, shape []int64, seed byte) safetensors.Tensor {
	t.Helper()
	size, err := dt.Size()
	if err != nil {
		t.Fatalf("Size(%s): %v", dt, err)
	}
	n := int64(size)
	for _, d := range shape {
		n *= d
	}
	data := pattern(int(n), seed)
	if dt == safetensors.Bool {
		for i := range data {
			data[i] &= 1
		}
	}
	return safetensors.Tensor{Name: name, DType: dt, Shape: shape, Data: data}
}

func TestDTypeSize(t *testing.T) {
	tests := []struct {
		dt   safetensors.DType
		size int
	}{
		{safetensors.F16, 2}, {safetensors.BF16, 2}, {safetensors.F32, 4},
		{safetensors.F64, 8}, {safetensors.I64, 8}, {safetensors.Bool, 1},
		{safetensors.U8, 1}, {safetensors.I8, 1}, {safetensors.I16, 2},
		{safetensors.I32, 4},
	}
	for _, tc := range tests {
		t.Run(string(tc.dt), func(t *testing.T) {
			got, err := tc.dt.Size()
			if err != nil || got != tc.size {
				t.Fatalf("Size() = %d, %v; want %d, nil", got, err, tc.size)
			}
		})
	}
	for _, bad := range []safetensors.DType{"", "f32", "F8_E4M3", "U64", "C64"} {
		t.Run("unknown "+string(bad), func(t *testing.T) {
			if _, err := bad.Size(); err == nil {
				t.Fatalf("Size(%q) succeeded, want error", bad)
			}
		})
	}
}

func TestRoundTrip(t *testing.T) {
	var everyDType []safetensors.Tensor
	for i, dt := range allDTypes {
		s := byte(i * 16)
		p := "t_" + string(dt) + "_"
		everyDType = append(everyDType,
			makeTensor(t, p+"matrix", dt, []int64{2, 3}, s),
			makeTensor(t, p+"vector", dt, []int64{5}, s+1),
			makeTensor(t, p+"cube", dt, []int64{2, 1, 3}, s+2),
			makeTensor(t, p+"scalar", dt, []int64{}, s+3),
			makeTensor(t, p+"empty", dt, []int64{0, 4}, s+4),
		)
	}
	tests := []struct {
		name     string
		tensors  []safetensors.Tensor
		metadata map[string]string
	}{
		{"every dtype with metadata", everyDType, map[string]string{
			"format": "pt", "note": "héllo <&> \"quoted\"\n", "": "empty key",
		}},
		{"every dtype without metadata", everyDType, nil},
		{"unsorted input", []safetensors.Tensor{
			makeTensor(t, "zeta", safetensors.F32, []int64{3}, 1),
			makeTensor(t, "alpha", safetensors.F64, []int64{1}, 2),
			makeTensor(t, "mid", safetensors.I64, []int64{2, 2}, 3),
		}, map[string]string{"k": "v"}},
		{"only zero-element tensors", []safetensors.Tensor{
			makeTensor(t, "a", safetensors.F32, []int64{0}, 0),
			makeTensor(t, "b", safetensors.F64, []int64{3, 0, 2}, 0),
		}, nil},
		{"scalar only", []safetensors.Tensor{
			makeTensor(t, "s", safetensors.F64, nil, 9),
		}, nil},
		{"no tensors", nil, map[string]string{"only": "metadata"}},
		{"nothing at all", nil, nil},
		{"unusual names", []safetensors.Tensor{
			makeTensor(t, "model.layers.0.weight", safetensors.F32, []int64{2}, 1),
			makeTensor(t, "ünïcödé/名前", safetensors.BF16, []int64{2}, 2),
			makeTensor(t, "quote\"back\\slash", safetensors.I8, []int64{3}, 3),
		}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "model.safetensors")
			if err := safetensors.Write(path, tc.tensors, tc.metadata); err != nil {
				t.Fatalf("Write: %v", err)
			}
			h, data, err := safetensors.Read(path)
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			h2, err := safetensors.ReadHeader(path)
			if err != nil {
				t.Fatalf("ReadHeader: %v", err)
			}
			checkHeader(t, h, tc.tensors, tc.metadata)
			checkHeader(t, h2, tc.tensors, tc.metadata)
			if len(data) != len(tc.tensors) {
				t.Fatalf("Read returned %d tensors, want %d", len(data), len(tc.tensors))
			}
			for _, want := range tc.tensors {
				got, ok := data[want.Name]
				if !ok {
					t.Fatalf("tensor %q missing from Read", want.Name)
				}
				if !bytes.Equal(got, want.Data) {
					t.Errorf("tensor %q data = %x, want %x", want.Name, got, want.Data)
				}
				if cap(got) != len(got) {
					t.Errorf("tensor %q: cap %d != len %d", want.Name, cap(got), len(got))
				}
			}
			if h.DataStart%8 != 0 {
				t.Errorf("DataStart = %d, not a multiple of 8", h.DataStart)
			}
			st, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			var total int64
			for _, e := range h.Entries {
				total += e.End - e.Begin
			}
			if st.Size() != h.DataStart+total {
				t.Errorf("file size %d, want DataStart %d + data %d", st.Size(), h.DataStart, total)
			}
		})
	}
}

// checkHeader compares a parsed header with what was written.
func checkHeader(t *testing.T, h *safetensors.Header, tensors []safetensors.Tensor, md map[string]string) {
	t.Helper()
	if len(md) == 0 {
		if h.Metadata != nil {
			t.Errorf("Metadata = %v, want nil", h.Metadata)
		}
	} else if !mapsEqual(h.Metadata, md) {
		t.Errorf("Metadata = %v, want %v", h.Metadata, md)
	}
	if len(h.Entries) != len(tensors) {
		t.Fatalf("got %d entries, want %d", len(h.Entries), len(tensors))
	}
	byName := map[string]safetensors.Entry{}
	for i, e := range h.Entries {
		byName[e.Name] = e
		if i > 0 && e.Begin < h.Entries[i-1].Begin {
			t.Errorf("entries not sorted by Begin: %v", h.Entries)
		}
	}
	// Tensors with data are laid out in name order.
	var names []string
	for _, e := range h.Entries {
		if e.End > e.Begin {
			names = append(names, e.Name)
		}
	}
	if !sort.StringsAreSorted(names) {
		t.Errorf("data section not in name order: %v", names)
	}
	for _, want := range tensors {
		e, ok := byName[want.Name]
		if !ok {
			t.Fatalf("entry %q missing", want.Name)
		}
		if e.DType != want.DType {
			t.Errorf("%q dtype = %s, want %s", want.Name, e.DType, want.DType)
		}
		if !slices.Equal(e.Shape, want.Shape) {
			t.Errorf("%q shape = %#v, want %v", want.Name, e.Shape, want.Shape)
		}
		if e.End-e.Begin != int64(len(want.Data)) {
			t.Errorf("%q offsets [%d,%d] for %d bytes", want.Name, e.Begin, e.End, len(want.Data))
		}
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestWriteHeaderLayout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.safetensors")
	tensors := []safetensors.Tensor{
		makeTensor(t, "b", safetensors.F32, []int64{1}, 0),
		makeTensor(t, "a", safetensors.I64, []int64{}, 0),
	}
	if err := safetensors.Write(path, tensors, map[string]string{"y": "2", "x": "1"}); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := int(raw[0]) | int(raw[1])<<8 | int(raw[2])<<16 | int(raw[3])<<24
	if (8+n)%8 != 0 {
		t.Fatalf("8+N = %d, not a multiple of 8", 8+n)
	}
	hdr := string(raw[8 : 8+n])
	want := `{"__metadata__":{"x":"1","y":"2"},` +
		`"a":{"dtype":"I64","shape":[],"data_offsets":[0,8]},` +
		`"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}`
	if got := string(bytes.TrimRight([]byte(hdr), " ")); got != want {
		t.Errorf("header =\n%s\nwant\n%s", got, want)
	}
	if pad := len(hdr) - len(want); pad < 0 || pad > 7 {
		t.Errorf("padding of %d bytes", pad)
	}
}
