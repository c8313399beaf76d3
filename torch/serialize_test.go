package torch

import (
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/internal/pyref"
	"github.com/ddpm-go/ddpm/torch/safetensors"
)

func TestSafetensorsRoundTrip(t *testing.T) {
	s := NewScope(NoGrad)
	defer s.Close()
	g := opGen(t, 5)
	x := s.Randn([]int64{3, 4}, Float32, CPU, g)
	in := map[string]*Tensor{
		"f32":  x,
		"f64":  s.Randn([]int64{2, 2, 2}, Float64, CPU, g),
		"f16":  s.ToDType(x, Float16),
		"bf16": s.ToDType(x, BFloat16),
		"i64":  s.FromInt64s([]int64{-1, 0, 1 << 40}, 3),
		"bool": s.FromBools([]bool{true, false}, 2),
		"u8":   s.FromBytes([]byte{0, 7, 255}, Uint8, 3),
		"0d":   s.Reshape(s.FromFloat32s([]float32{2.5}, 1)),
	}
	meta := map[string]string{"step": "42", "config": `{"ch":64}`}
	path := filepath.Join(t.TempDir(), "m.safetensors")
	if err := SaveSafetensors(path, in, meta); err != nil {
		t.Fatal(err)
	}
	out, gotMeta, err := s.LoadSafetensors(path, CPU)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(gotMeta, meta) {
		t.Errorf("metadata %v, want %v", gotMeta, meta)
	}
	for name, want := range in {
		got := out[name]
		wm, _ := want.Meta()
		gm, err := got.Meta()
		if err != nil || !reflect.DeepEqual(gm.Shape, wm.Shape) || gm.DType != wm.DType {
			t.Errorf("%s: got %v, want %v (%v)", name, got, want, err)
			continue
		}
		wb, _ := want.Bytes()
		gb, _ := got.Bytes()
		if !reflect.DeepEqual(wb, gb) {
			t.Errorf("%s: bytes differ", name)
		}
	}
}

// A file written by PyTorch (the format built by hand: 8-byte length, JSON,
// raw bytes) reads back identically, and PyTorch reads ours.
func TestSafetensorsInterchangeWithPyTorch(t *testing.T) {
	py := pyref.Python(t)
	dir := t.TempDir()
	fromPy := filepath.Join(dir, "py.safetensors")
	script := `
import json, struct, sys, torch
g = torch.Generator().manual_seed(11)
ts = {"w": torch.randn(4, 3, generator=g), "b": torch.arange(5, dtype=torch.int64),
      "h": torch.randn(2, 2, generator=g).to(torch.float16)}
codes = {torch.float32: "F32", torch.int64: "I64", torch.float16: "F16", torch.float64: "F64"}
header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
for k, v in ts.items():
    b = v.contiguous().numpy().tobytes()
    header[k] = {"dtype": codes[v.dtype], "shape": list(v.shape), "data_offsets": [off, off + len(b)]}
    blobs.append(b); off += len(b)
h = json.dumps(header).encode()
h += b" " * ((8 - len(h) % 8) % 8)
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", len(h))); f.write(h); f.write(b"".join(blobs))
print(json.dumps({k: v.double().flatten().tolist() for k, v in ts.items()}))
`
	outJSON, err := exec.Command(py, "-c", script, fromPy).Output()
	if err != nil {
		t.Fatalf("python: %v", err)
	}
	s := NewScope(NoGrad)
	defer s.Close()
	got, meta, err := s.LoadSafetensors(fromPy, CPU)
	if err != nil {
		t.Fatal(err)
	}
	if meta["format"] != "pt" {
		t.Errorf("metadata %v", meta)
	}
	check := `
import json, struct, sys, torch
want = json.loads(sys.stdin.read())
raw = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8:8 + n])
codes = {"F32": torch.float32, "I64": torch.int64, "F16": torch.float16}
for k, v in want.items():
    e = header[k]
    b, end = e["data_offsets"]
    t = torch.frombuffer(bytearray(raw[8 + n + b:8 + n + end]), dtype=codes[e["dtype"]]).reshape(e["shape"])
    assert t.double().flatten().tolist() == v, k
assert header["__metadata__"]["format"] == "pt"
print("ok")
`
	// Write the loaded tensors back from Go and have PyTorch check every value.
	back := filepath.Join(dir, "go.safetensors")
	if err := SaveSafetensors(back, got, meta); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(py, "-c", check, back)
	cmd.Stdin = strings.NewReader(string(outJSON))
	res, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(res)) != "ok" {
		t.Fatalf("python check of the Go-written file: %v\n%s", err, res)
	}
	// And the values Go read equal the values Python wrote.
	cmd = exec.Command(py, "-c", check, fromPy)
	cmd.Stdin = strings.NewReader(string(outJSON))
	if res, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("python check of its own file: %v\n%s", err, res)
	}
}

func TestLoadSafetensorsRejectsBadFiles(t *testing.T) {
	dir := t.TempDir()
	s := NewScope(NoGrad)
	defer s.Close()
	good := filepath.Join(dir, "good.safetensors")
	if err := SaveSafetensors(good, map[string]*Tensor{"x": s.Ones([]int64{16}, Float32, CPU)}, nil); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	lying := append([]byte{}, raw...)
	lying[0] = 0xff // header length beyond the file
	for name, data := range map[string][]byte{
		"truncated": raw[:len(raw)-10],
		"lying":     lying,
		"short":     raw[:5],
	} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		_, _, err := s.LoadSafetensors(p, CPU)
		if !errors.Is(err, safetensors.ErrInvalid) || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: got %v, want an invalid-file error naming the file", name, err)
		}
	}
	if s.Err() != nil {
		t.Errorf("a bad file poisoned the scope: %v", s.Err())
	}
}

// A file whose tensors the shim cannot hold faithfully is an error naming
// the tensor: bool bytes other than 0 and 1 (which would make Go bools
// neither true nor false) and more dimensions than a tensor may have.
func TestLoadSafetensorsRejectsBadTensors(t *testing.T) {
	dir := t.TempDir()
	s := NewScope(NoGrad)
	defer s.Close()
	file := func(name, header string, data []byte) string {
		b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, append(append(b, header...), data...), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ones := strings.Repeat("1,", 16) + "1"
	for _, c := range []struct{ path, want string }{
		{file("bool.safetensors", `{"b":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}}`, []byte{1, 2}), `tensor "b" is bool but holds the byte 2`},
		{file("dims.safetensors", `{"d":{"dtype":"F32","shape":[`+ones+`],"data_offsets":[0,4]}}`, make([]byte, 4)), `tensor "d" has 17 dimensions, more than the 16 supported`},
	} {
		if _, _, err := s.LoadSafetensors(c.path, CPU); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error with %q", c.path, err, c.want)
		}
	}
	ok := file("ok.safetensors", `{"b":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}}`, []byte{1, 0})
	w, _, err := s.LoadSafetensors(ok, CPU)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := w["b"].Bools(); err != nil || !b[0] || b[1] {
		t.Errorf("bools %v, %v; want [true false]", b, err)
	}
}
