package safetensors_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/torch/safetensors"
)

// rawFile assembles a file from a header string and data bytes, with the
// correct length prefix.
func rawFile(header string, data []byte) []byte {
	return withLength(uint64(len(header)), []byte(header), data)
}

// withLength assembles a file with an arbitrary length prefix.
func withLength(n uint64, parts ...[]byte) []byte {
	b := binary.LittleEndian.AppendUint64(nil, n)
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// entry formats one tensor's header entry.
func entry(name, dtype, shape string, begin, end int64) string {
	return fmt.Sprintf(`%q:{"dtype":%q,"shape":%s,"data_offsets":[%d,%d]}`, name, dtype, shape, begin, end)
}

func TestCorruptFiles(t *testing.T) {
	a := entry("a", "F32", "[2]", 0, 8)
	d8 := make([]byte, 8)
	tests := []struct {
		name string
		file []byte
		word string // must appear in the error message
	}{
		{"empty file", nil, "truncated"},
		{"five bytes", []byte{1, 2, 3, 4, 5}, "truncated"},
		{"header length beyond file", withLength(100, []byte(`{}`)), "truncated"},
		{"header length one past file", withLength(3, []byte(`{}`)), "truncated"},
		{"absurd header length", withLength(200<<20, []byte(`{}`)), "limit"},
		{"max uint64 header length", withLength(^uint64(0), []byte(`{}`)), "limit"},
		{"empty header", rawFile(``, nil), "json"},
		{"not json", rawFile(`{"a":`, nil), "json"},
		{"missing colon", rawFile(`{"a" 1}`, nil), "json"},
		{"json array", rawFile(`[1,2]`, nil), "object"},
		{"json string", rawFile(`"x"`, nil), "object"},
		{"json null", rawFile(`null`, nil), "object"},
		{"trailing garbage", rawFile(`{} x`, nil), "json"},
		{"two objects", rawFile(`{}{}`, nil), "json"},
		{"nul padding", rawFile("{}\x00\x00", nil), "json"},
		{"invalid utf-8", rawFile("{\"\xff\":1}", nil), "utf-8"},
		{"entry is array", rawFile(`{"a":[1]}`, nil), "object"},
		{"entry is null", rawFile(`{"a":null}`, nil), "object"},
		{"missing dtype", rawFile(`{"a":{"shape":[2],"data_offsets":[0,8]}}`, d8), "dtype"},
		{"dtype key in wrong case", rawFile(`{"a":{"DTYPE":"F32","shape":[2],"data_offsets":[0,8]}}`, d8), "dtype"},
		{"missing shape", rawFile(`{"a":{"dtype":"F32","data_offsets":[0,8]}}`, d8), "shape"},
		{"missing data_offsets", rawFile(`{"a":{"dtype":"F32","shape":[2]}}`, d8), "data_offsets"},
		{"dtype is number", rawFile(`{"a":{"dtype":4,"shape":[2],"data_offsets":[0,8]}}`, d8), "dtype"},
		{"dtype is null", rawFile(`{"a":{"dtype":null,"shape":[2],"data_offsets":[0,8]}}`, d8), "dtype"},
		{"unknown dtype", rawFile(`{`+entry("a", "F7", "[2]", 0, 8)+`}`, d8), "dtype"},
		{"lowercase dtype", rawFile(`{`+entry("a", "f32", "[2]", 0, 8)+`}`, d8), "dtype"},
		{"shape is string", rawFile(`{`+entry("a", "F32", `"2"`, 0, 8)+`}`, d8), "shape"},
		{"shape is null", rawFile(`{`+entry("a", "F32", `null`, 0, 8)+`}`, d8), "shape"},
		{"shape has float", rawFile(`{`+entry("a", "F32", `[2.0]`, 0, 8)+`}`, d8), "shape"},
		{"shape has null", rawFile(`{`+entry("a", "F32", `[null]`, 0, 8)+`}`, d8), "shape"},
		{"shape beyond int64", rawFile(`{`+entry("a", "F32", `[99999999999999999999]`, 0, 8)+`}`, d8), "shape"},
		{"negative dim", rawFile(`{`+entry("a", "F32", `[-2]`, 0, 8)+`}`, d8), "negative"},
		{"negative dim beside zero", rawFile(`{`+entry("a", "F32", `[0,-2]`, 0, 0)+`}`, nil), "negative"},
		{"numel overflow", rawFile(`{`+entry("a", "F32", `[4294967296,4294967296]`, 0, 8)+`}`, d8), "overflow"},
		{"byte size overflow", rawFile(`{`+entry("a", "F32", `[2305843009213693952]`, 0, 8)+`}`, d8), "overflow"},
		{"data_offsets is string", rawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":"0,8"}}`, d8), "data_offsets"},
		{"data_offsets has three", rawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8,8]}}`, d8), "data_offsets"},
		{"data_offsets has one", rawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[8]}}`, d8), "data_offsets"},
		{"data_offsets has float", rawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8.5]}}`, d8), "data_offsets"},
		{"negative offset", rawFile(`{`+entry("a", "F32", "[2]", -8, 0)+`}`, d8), "data_offsets"},
		{"begin after end", rawFile(`{`+entry("a", "F32", "[2]", 8, 0)+`}`, d8), "after end"},
		{"size mismatch", rawFile(`{`+entry("a", "F32", "[3]", 0, 8)+`}`, d8), "needs 12"},
		{"scalar size mismatch", rawFile(`{`+entry("a", "F64", "[]", 0, 4)+`}`, make([]byte, 4)), "needs 8"},
		{"offsets beyond data section", rawFile(`{`+a+`,`+entry("b", "F32", "[2]", 8, 16)+`}`, d8), "truncated"},
		{"huge offsets", rawFile(`{`+entry("a", "F32", "[1099511627776]", 0, 4398046511104)+`}`, d8), "truncated"},
		{"truncated data", rawFile(`{`+a+`}`, d8[:5]), "truncated"},
		{"truncated to header", rawFile(`{`+a+`}`, nil), "truncated"},
		{"overlap", rawFile(`{`+a+`,`+entry("b", "F32", "[2]", 4, 12)+`}`, make([]byte, 12)), "overlap"},
		{"same range twice", rawFile(`{`+a+`,`+entry("b", "F32", "[2]", 0, 8)+`}`, d8), "overlap"},
		{"zero-size inside tensor", rawFile(`{`+a+`,`+entry("z", "F32", "[0]", 4, 4)+`}`, d8), "overlap"},
		{"gap between tensors", rawFile(`{`+a+`,`+entry("b", "F32", "[2]", 12, 20)+`}`, make([]byte, 20)), "gap"},
		{"gap at start", rawFile(`{`+entry("a", "F32", "[2]", 4, 12)+`}`, make([]byte, 12)), "gap"},
		{"trailing data bytes", rawFile(`{`+a+`}`, make([]byte, 12)), "trailing"},
		{"data without tensors", rawFile(`{}`, d8), "trailing"},
		{"duplicate names", rawFile(`{`+a+`,`+a+`}`, d8), "duplicate"},
		{"duplicate names via escape", rawFile(`{`+a+`,"\u0061":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, d8), "duplicate"},
		{"duplicate metadata", rawFile(`{"__metadata__":{},"__metadata__":{}}`, nil), "duplicate"},
		{"metadata value number", rawFile(`{"__metadata__":{"k":1}}`, nil), "metadata"},
		{"metadata value null", rawFile(`{"__metadata__":{"k":null}}`, nil), "metadata"},
		{"metadata value object", rawFile(`{"__metadata__":{"k":{"x":"y"}}}`, nil), "metadata"},
		{"metadata is array", rawFile(`{"__metadata__":["k"]}`, nil), "metadata"},
		{"metadata is string", rawFile(`{"__metadata__":"k"}`, nil), "metadata"},
	}
	dir := t.TempDir()
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, fmt.Sprintf("bad%02d.safetensors", i))
			if err := os.WriteFile(path, tc.file, 0o644); err != nil {
				t.Fatal(err)
			}
			check := func(what string, err error, wantPath bool) {
				t.Helper()
				if err == nil {
					t.Fatalf("%s succeeded, want error containing %q", what, tc.word)
				}
				if !errors.Is(err, safetensors.ErrInvalid) {
					t.Errorf("%s error %q does not wrap ErrInvalid", what, err)
				}
				msg := err.Error()
				if !strings.Contains(msg, tc.word) {
					t.Errorf("%s error %q does not mention %q", what, msg, tc.word)
				}
				if wantPath && !strings.Contains(msg, path) {
					t.Errorf("%s error %q does not name the file", what, msg)
				}
			}
			_, err := safetensors.ReadHeader(path)
			check("ReadHeader", err, true)
			_, _, err = safetensors.Read(path)
			check("Read", err, true)
			_, err = safetensors.ParseHeader(bytes.NewReader(tc.file), int64(len(tc.file)))
			check("ParseHeader", err, false)
		})
	}
}

func TestValidEdgeCases(t *testing.T) {
	tests := []struct {
		name    string
		file    []byte
		entries int
		md      map[string]string
	}{
		{"empty object", rawFile(`{}`, nil), 0, nil},
		{"padded empty object", rawFile(`{}      `, nil), 0, nil},
		{"leading whitespace", rawFile(" \n{}", nil), 0, nil},
		{"null metadata", rawFile(`{"__metadata__":null}`, nil), 0, nil},
		{"empty metadata", rawFile(`{"__metadata__":{}}`, nil), 0, map[string]string{}},
		{"metadata after tensors", rawFile(`{`+entry("a", "U8", "[1]", 0, 1)+`,"__metadata__":{"k":"v"}}`, []byte{7}), 1, map[string]string{"k": "v"}},
		{"zero-size tensors sharing offsets", rawFile(`{`+
			entry("z1", "F32", "[0]", 0, 0)+`,`+
			entry("a", "F32", "[2]", 0, 8)+`,`+
			entry("z2", "I64", "[3,0]", 8, 8)+`,`+
			entry("b", "U8", "[1]", 8, 9)+`,`+
			entry("z3", "BOOL", "[0]", 9, 9)+`}`, make([]byte, 9)), 5, nil},
		{"zero dim with huge dims", rawFile(`{`+entry("z", "F64", "[9223372036854775807,0,9223372036854775807]", 0, 0)+`}`, nil), 1, nil},
		{"unknown entry fields ignored", rawFile(`{"a":{"dtype":"I32","shape":[1],"data_offsets":[0,4],"extra":[1]}}`, make([]byte, 4)), 1, nil},
		{"reversed data order", rawFile(`{`+entry("a", "F32", "[1]", 4, 8)+`,`+entry("b", "F32", "[1]", 0, 4)+`}`, d(8)), 2, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, err := safetensors.ParseHeader(bytes.NewReader(tc.file), int64(len(tc.file)))
			if err != nil {
				t.Fatalf("ParseHeader: %v", err)
			}
			if len(h.Entries) != tc.entries {
				t.Errorf("got %d entries, want %d", len(h.Entries), tc.entries)
			}
			if (h.Metadata == nil) != (tc.md == nil) || !mapsEqual(h.Metadata, tc.md) {
				t.Errorf("Metadata = %#v, want %#v", h.Metadata, tc.md)
			}
			var pos int64
			for _, e := range h.Entries {
				if e.Begin != pos {
					t.Errorf("entries not contiguous in offset order: %+v", h.Entries)
				}
				pos = e.End
			}
			if h.DataStart+pos != int64(len(tc.file)) {
				t.Errorf("DataStart %d + %d != file size %d", h.DataStart, pos, len(tc.file))
			}
		})
	}
}

func d(n int) []byte { return make([]byte, n) }

// failingReader returns an I/O error that is not about the file's format.
type failingReader struct{}

var errDisk = errors.New("disk on fire")

func (failingReader) ReadAt([]byte, int64) (int, error) { return 0, errDisk }

func TestIOErrorIsNotInvalid(t *testing.T) {
	_, err := safetensors.ParseHeader(failingReader{}, 100)
	if !errors.Is(err, errDisk) || errors.Is(err, safetensors.ErrInvalid) {
		t.Fatalf("err = %v; want the I/O error, not ErrInvalid", err)
	}
	_, err = safetensors.ReadHeader(filepath.Join(t.TempDir(), "missing.safetensors"))
	if !errors.Is(err, os.ErrNotExist) || errors.Is(err, safetensors.ErrInvalid) {
		t.Fatalf("err = %v; want not-exist, not ErrInvalid", err)
	}
	_, _, err = safetensors.Read(filepath.Join(t.TempDir(), "missing.safetensors"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("err = %v; want not-exist", err)
	}
}

// shortReader claims a larger file than it holds, as a file truncated
// after being measured would.
func TestParseHeaderShortReader(t *testing.T) {
	file := rawFile(`{`+entry("a", "F32", "[2]", 0, 8)+`}`, d(8))
	r := io.NewSectionReader(bytes.NewReader(file[:20]), 0, 20)
	_, err := safetensors.ParseHeader(r, int64(len(file)))
	if !errors.Is(err, safetensors.ErrInvalid) || !strings.Contains(err.Error(), "truncated") {
		t.Fatalf("err = %v; want truncated ErrInvalid", err)
	}
}
