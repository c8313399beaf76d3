package safetensors_test

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/ddpm-go/ddpm/internal/pyref"
	"github.com/ddpm-go/ddpm/torch/safetensors"
)

// pythonWithNumpy returns a Python interpreter that can import numpy, or
// skips the test (fails it under DDPM_REQUIRE_REFERENCES=1). DDPM_PYTHON
// overrides the default /usr/bin/python3.
func pythonWithNumpy(t *testing.T) string {
	t.Helper()
	return pyref.Require(t, "import numpy")
}

// pyWriteScript builds safetensors files by hand (struct + json + numpy),
// one with the header padded so the data section is 8-byte aligned and one
// padded so that it is deliberately not. The data section is not in name
// order.
const pyWriteScript = `
import json, struct, sys
import numpy as np

out = sys.argv[1]
f32 = np.array([[1.5, -2.25, 3.0], [0.1, 1e-3, -7.0]], dtype="<f4")
f64 = np.array([np.pi, -0.0, 1e300, 5e-324], dtype="<f8")
i64 = np.array([[-9223372036854775808, 0], [42, 9223372036854775807]], dtype="<i8")
blobs = [("w64", "F64", f64), ("a32", "F32", f32), ("k64", "I64", i64)]

def build(align):
    header = {"__metadata__": {"format": "pt", "note": "h\u00e9llo"}}
    data = b""
    for name, dt, arr in blobs:
        raw = arr.tobytes(order="C")
        header[name] = {"dtype": dt, "shape": list(arr.shape),
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    hb = json.dumps(header).encode("utf-8")
    while (8 + len(hb)) % 8 != align:
        hb += b" "
    return struct.pack("<Q", len(hb)) + hb + data

for suffix, align in (("aligned", 0), ("unaligned", 3)):
    with open(out + "." + suffix, "wb") as f:
        f.write(build(align))
`

func TestReadPythonWritten(t *testing.T) {
	py := pythonWithNumpy(t)
	base := filepath.Join(t.TempDir(), "py.safetensors")
	if out, err := exec.Command(py, "-c", pyWriteScript, base).CombinedOutput(); err != nil {
		t.Fatalf("python failed: %v\n%s", err, out)
	}
	for _, variant := range []string{"aligned", "unaligned"} {
		t.Run(variant, func(t *testing.T) {
			path := base + "." + variant
			h, data, err := safetensors.Read(path)
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			if wantAligned := variant == "aligned"; (h.DataStart%8 == 0) != wantAligned {
				t.Errorf("%s file has DataStart %d", variant, h.DataStart)
			}
			wantMD := map[string]string{"format": "pt", "note": "héllo"}
			if !mapsEqual(h.Metadata, wantMD) {
				t.Errorf("Metadata = %v, want %v", h.Metadata, wantMD)
			}
			var order []string
			for _, e := range h.Entries {
				order = append(order, e.Name)
			}
			if want := []string{"w64", "a32", "k64"}; !slices.Equal(order, want) {
				t.Errorf("entries in offset order = %v, want %v", order, want)
			}
			shapes := map[string][]int64{"a32": {2, 3}, "w64": {4}, "k64": {2, 2}}
			dtypes := map[string]safetensors.DType{"a32": safetensors.F32, "w64": safetensors.F64, "k64": safetensors.I64}
			for _, e := range h.Entries {
				if !slices.Equal(e.Shape, shapes[e.Name]) || e.DType != dtypes[e.Name] {
					t.Errorf("%s: %s %v, want %s %v", e.Name, e.DType, e.Shape, dtypes[e.Name], shapes[e.Name])
				}
			}

			wantF32 := []float32{1.5, -2.25, 3.0, 0.1, 1e-3, -7.0}
			got := data["a32"]
			if len(got) != 4*len(wantF32) {
				t.Fatalf("a32 has %d bytes", len(got))
			}
			for i, w := range wantF32 {
				g := math.Float32frombits(binary.LittleEndian.Uint32(got[4*i:]))
				if math.Float32bits(g) != math.Float32bits(w) {
					t.Errorf("a32[%d] = %v, want %v", i, g, w)
				}
			}

			wantF64 := []float64{math.Pi, math.Copysign(0, -1), 1e300, math.SmallestNonzeroFloat64}
			got = data["w64"]
			if len(got) != 8*len(wantF64) {
				t.Fatalf("w64 has %d bytes", len(got))
			}
			for i, w := range wantF64 {
				g := math.Float64frombits(binary.LittleEndian.Uint64(got[8*i:]))
				if math.Float64bits(g) != math.Float64bits(w) {
					t.Errorf("w64[%d] = %v, want %v", i, g, w)
				}
			}

			wantI64 := []int64{math.MinInt64, 0, 42, math.MaxInt64}
			got = data["k64"]
			if len(got) != 8*len(wantI64) {
				t.Fatalf("k64 has %d bytes", len(got))
			}
			for i, w := range wantI64 {
				if g := int64(binary.LittleEndian.Uint64(got[8*i:])); g != w {
					t.Errorf("k64[%d] = %d, want %d", i, g, w)
				}
			}
		})
	}
}

// pyReadScript parses a safetensors file by hand (struct + json + numpy)
// and prints what it found as JSON.
const pyReadScript = `
import json, struct, sys
import numpy as np

buf = open(sys.argv[1], "rb").read()
(n,) = struct.unpack("<Q", buf[:8])
text = buf[8:8 + n].decode("utf-8")
header = json.loads(text)
start = 8 + n
data = buf[start:]
np_types = {"F16": "<f2", "BF16": "<u2", "F32": "<f4", "F64": "<f8", "I64": "<i8",
            "BOOL": "?", "U8": "u1", "I8": "i1", "I16": "<i2", "I32": "<i4"}
keys = list(header.keys())
meta = header.pop("__metadata__", None)
out = {
    "keys": keys,
    "header_len": n,
    "data_start": start,
    "aligned": start % 8 == 0,
    "padding_is_spaces": text.rstrip(" ").endswith("}"),
    "data_len": len(data),
    "metadata": meta,
    "tensors": {},
}
covered = 0
for name, info in header.items():
    b, e = info["data_offsets"]
    covered = max(covered, e)
    arr = np.frombuffer(data[b:e], dtype=np_types[info["dtype"]]).reshape(info["shape"])
    out["tensors"][name] = {"dtype": info["dtype"], "shape": list(arr.shape),
                            "values": arr.reshape(-1).tolist()}
out["covered"] = covered
print(json.dumps(out))
`

func TestPythonReadsGoWritten(t *testing.T) {
	py := pythonWithNumpy(t)

	f32 := []float32{1.5, -2.25, 3.0, 0.1, 1e-3, -7.0}
	f64 := []float64{math.Pi, -1e-300, 123456789.125}
	i64 := []int64{math.MinInt64, -1, math.MaxInt64}
	i32 := []int32{math.MinInt32, 7, math.MaxInt32}
	i16 := []int16{-32768, 12, 32767}
	f16bits := []uint16{0x3C00, 0xC000, 0x3555} // 1, -2, 0.33325195
	bf16bits := []uint16{0x3F80, 0xC040}        // 1, -3

	le := binary.LittleEndian
	f32b := make([]byte, 4*len(f32))
	for i, v := range f32 {
		le.PutUint32(f32b[4*i:], math.Float32bits(v))
	}
	f64b := make([]byte, 8*len(f64))
	for i, v := range f64 {
		le.PutUint64(f64b[8*i:], math.Float64bits(v))
	}
	i64b := make([]byte, 8*len(i64))
	for i, v := range i64 {
		le.PutUint64(i64b[8*i:], uint64(v))
	}
	i32b := make([]byte, 4*len(i32))
	for i, v := range i32 {
		le.PutUint32(i32b[4*i:], uint32(v))
	}
	i16b := make([]byte, 2*len(i16))
	for i, v := range i16 {
		le.PutUint16(i16b[2*i:], uint16(v))
	}
	f16b := make([]byte, 2*len(f16bits))
	for i, v := range f16bits {
		le.PutUint16(f16b[2*i:], v)
	}
	bf16b := make([]byte, 2*len(bf16bits))
	for i, v := range bf16bits {
		le.PutUint16(bf16b[2*i:], v)
	}
	scalar := make([]byte, 4)
	le.PutUint32(scalar, math.Float32bits(-0.5))

	tensors := []safetensors.Tensor{
		{Name: "f32", DType: safetensors.F32, Shape: []int64{2, 3}, Data: f32b},
		{Name: "f64", DType: safetensors.F64, Shape: []int64{3}, Data: f64b},
		{Name: "i64", DType: safetensors.I64, Shape: []int64{3, 1}, Data: i64b},
		{Name: "i32", DType: safetensors.I32, Shape: []int64{3}, Data: i32b},
		{Name: "i16", DType: safetensors.I16, Shape: []int64{3}, Data: i16b},
		{Name: "f16", DType: safetensors.F16, Shape: []int64{3}, Data: f16b},
		{Name: "bf16", DType: safetensors.BF16, Shape: []int64{2}, Data: bf16b},
		{Name: "mask", DType: safetensors.Bool, Shape: []int64{3}, Data: []byte{1, 0, 1}},
		{Name: "u8", DType: safetensors.U8, Shape: []int64{2}, Data: []byte{0, 255}},
		{Name: "i8", DType: safetensors.I8, Shape: []int64{2}, Data: []byte{0x80, 0x7f}},
		{Name: "scalar", DType: safetensors.F32, Shape: []int64{}, Data: scalar},
		{Name: "empty", DType: safetensors.F64, Shape: []int64{0, 3}, Data: nil},
	}
	md := map[string]string{"format": "pt", "note": "héllo"}
	path := filepath.Join(t.TempDir(), "go.safetensors")
	if err := safetensors.Write(path, tensors, md); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(py, "-c", pyReadScript, path).Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			t.Fatalf("python failed: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("python failed: %v", err)
	}
	var res struct {
		Keys            []string
		HeaderLen       int64 `json:"header_len"`
		DataStart       int64 `json:"data_start"`
		Aligned         bool
		PaddingIsSpaces bool  `json:"padding_is_spaces"`
		DataLen         int64 `json:"data_len"`
		Covered         int64
		Metadata        map[string]string
		Tensors         map[string]struct {
			DType  string
			Shape  []int64
			Values json.RawMessage
		}
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("decoding python output: %v\n%s", err, out)
	}

	t.Run("layout", func(t *testing.T) {
		if !res.Aligned || res.DataStart%8 != 0 {
			t.Errorf("python sees data start %d, not 8-byte aligned", res.DataStart)
		}
		if !res.PaddingIsSpaces {
			t.Errorf("python sees header padding that is not spaces")
		}
		if res.Covered != res.DataLen {
			t.Errorf("tensors cover %d of %d data bytes", res.Covered, res.DataLen)
		}
		wantKeys := []string{"__metadata__", "bf16", "empty", "f16", "f32", "f64",
			"i16", "i32", "i64", "i8", "mask", "scalar", "u8"}
		if !slices.Equal(res.Keys, wantKeys) {
			t.Errorf("header keys = %v, want %v", res.Keys, wantKeys)
		}
		if !mapsEqual(res.Metadata, md) {
			t.Errorf("metadata = %v, want %v", res.Metadata, md)
		}
		for _, tn := range tensors {
			got, ok := res.Tensors[tn.Name]
			if !ok {
				t.Errorf("python did not see tensor %q", tn.Name)
				continue
			}
			if got.DType != string(tn.DType) || !slices.Equal(got.Shape, tn.Shape) {
				t.Errorf("%s: python sees %s %v, want %s %v", tn.Name, got.DType, got.Shape, tn.DType, tn.Shape)
			}
		}
	})

	floats := func(name string) []float64 {
		var v []float64
		if err := json.Unmarshal(res.Tensors[name].Values, &v); err != nil {
			t.Fatalf("%s values: %v", name, err)
		}
		return v
	}
	ints := func(name string) []int64 {
		var v []int64
		if err := json.Unmarshal(res.Tensors[name].Values, &v); err != nil {
			t.Fatalf("%s values: %v", name, err)
		}
		return v
	}
	tests := []struct {
		name string
		got  func() any
		want any
	}{
		{"f32", func() any { return floats("f32") }, widen(f32)},
		{"f64", func() any { return floats("f64") }, f64},
		{"i64", func() any { return ints("i64") }, i64},
		{"i32", func() any { return ints("i32") }, widenInt(i32)},
		{"i16", func() any { return ints("i16") }, widenInt(i16)},
		{"f16", func() any { return floats("f16") }, []float64{1, -2, 0.333251953125}},
		{"bf16", func() any { return ints("bf16") }, []int64{0x3F80, 0xC040}},
		{"u8", func() any { return ints("u8") }, []int64{0, 255}},
		{"i8", func() any { return ints("i8") }, []int64{-128, 127}},
		{"scalar", func() any { return floats("scalar") }, []float64{-0.5}},
		{"empty", func() any { return floats("empty") }, []float64{}},
		{"mask", func() any {
			var v []bool
			if err := json.Unmarshal(res.Tensors["mask"].Values, &v); err != nil {
				t.Fatalf("mask values: %v", err)
			}
			return v
		}, []bool{true, false, true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, _ := json.Marshal(tc.got())
			want, _ := json.Marshal(tc.want)
			if string(got) != string(want) {
				t.Errorf("python values = %s, want %s", got, want)
			}
		})
	}
}

func widen(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

func widenInt[T int16 | int32](v []T) []int64 {
	out := make([]int64, len(v))
	for i, x := range v {
		out[i] = int64(x)
	}
	return out
}
