package safetensors_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/torch/safetensors"
)

// dirNames lists the names in dir.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestWriteRejectsInvalidAtomically(t *testing.T) {
	good := makeTensor(t, "good", safetensors.F32, []int64{2, 2}, 1)
	tests := []struct {
		name    string
		tensors []safetensors.Tensor
		md      map[string]string
		word    string
	}{
		{"empty name", []safetensors.Tensor{good, {Name: "", DType: safetensors.F32, Shape: []int64{}, Data: d(4)}}, nil, "empty name"},
		{"duplicate name", []safetensors.Tensor{good, good}, nil, "duplicate"},
		{"reserved name", []safetensors.Tensor{good, {Name: "__metadata__", DType: safetensors.U8, Shape: []int64{1}, Data: d(1)}}, nil, "reserved"},
		{"invalid utf-8 name", []safetensors.Tensor{{Name: "a\xff", DType: safetensors.U8, Shape: []int64{1}, Data: d(1)}}, nil, "utf-8"},
		{"unknown dtype", []safetensors.Tensor{good, {Name: "x", DType: "F128", Shape: []int64{1}, Data: d(16)}}, nil, "dtype"},
		{"empty dtype", []safetensors.Tensor{{Name: "x", Shape: []int64{1}, Data: d(1)}}, nil, "dtype"},
		{"negative dim", []safetensors.Tensor{good, {Name: "x", DType: safetensors.F32, Shape: []int64{-1}, Data: nil}}, nil, "negative"},
		{"data too short", []safetensors.Tensor{good, {Name: "x", DType: safetensors.F32, Shape: []int64{3}, Data: d(11)}}, nil, "needs 12"},
		{"data too long", []safetensors.Tensor{good, {Name: "x", DType: safetensors.F64, Shape: []int64{}, Data: d(9)}}, nil, "needs 8"},
		{"data for zero-element tensor", []safetensors.Tensor{{Name: "x", DType: safetensors.F64, Shape: []int64{0}, Data: d(8)}}, nil, "needs 0"},
		{"shape overflow", []safetensors.Tensor{{Name: "x", DType: safetensors.I64, Shape: []int64{1 << 40, 1 << 30}, Data: nil}}, nil, "overflow"},
		{"invalid utf-8 metadata", []safetensors.Tensor{good}, map[string]string{"k": "\xfe"}, "utf-8"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "model.safetensors")
			if err := safetensors.Write(path, []safetensors.Tensor{good}, map[string]string{"v": "1"}); err != nil {
				t.Fatal(err)
			}
			before, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			err = safetensors.Write(path, tc.tensors, tc.md)
			if err == nil {
				t.Fatal("Write succeeded, want error")
			}
			if !strings.Contains(err.Error(), tc.word) || !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not mention %q and the path", err, tc.word)
			}
			after, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(before, after) {
				t.Error("existing file changed by a failed Write")
			}
			if names := dirNames(t, dir); !slices.Equal(names, []string{"model.safetensors"}) {
				t.Errorf("directory holds %v after failed Write", names)
			}
		})
	}
}

func TestWriteFailsLateWithoutLeftovers(t *testing.T) {
	// The destination is a non-empty directory, so every step up to the
	// rename succeeds and the rename itself fails.
	dir := t.TempDir()
	path := filepath.Join(dir, "model.safetensors")
	if err := os.Mkdir(path, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(path, "keep"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := safetensors.Write(path, []safetensors.Tensor{makeTensor(t, "a", safetensors.F32, []int64{4}, 0)}, nil)
	if err == nil {
		t.Fatal("Write over a directory succeeded")
	}
	if errors.Is(err, safetensors.ErrInvalid) {
		t.Errorf("I/O failure %v wraps ErrInvalid", err)
	}
	if names := dirNames(t, dir); !slices.Equal(names, []string{"model.safetensors"}) {
		t.Errorf("directory holds %v after failed Write", names)
	}
	if names := dirNames(t, path); !slices.Equal(names, []string{"keep"}) {
		t.Errorf("destination directory holds %v", names)
	}
}

func TestWriteMissingDirectory(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "no", "such", "dir", "m.safetensors")
	if err := safetensors.Write(path, nil, nil); err == nil {
		t.Fatal("Write into a missing directory succeeded")
	}
	if names := dirNames(t, dir); len(names) != 0 {
		t.Errorf("directory holds %v", names)
	}
}

func TestWriteReplaces(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "model.safetensors")
	old := makeTensor(t, "old", safetensors.F64, []int64{100}, 3)
	if err := safetensors.Write(path, []safetensors.Tensor{old}, nil); err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" {
		if err := os.Chmod(path, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name    string
		tensors []safetensors.Tensor
		md      map[string]string
	}{
		{"smaller", []safetensors.Tensor{makeTensor(t, "new", safetensors.I8, []int64{3}, 5)}, map[string]string{"a": "b"}},
		{"larger", []safetensors.Tensor{makeTensor(t, "big", safetensors.F32, []int64{64, 64}, 6)}, nil},
		{"empty", nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := safetensors.Write(path, tc.tensors, tc.md); err != nil {
				t.Fatal(err)
			}
			h, data, err := safetensors.Read(path)
			if err != nil {
				t.Fatal(err)
			}
			checkHeader(t, h, tc.tensors, tc.md)
			for _, tn := range tc.tensors {
				if !bytes.Equal(data[tn.Name], tn.Data) {
					t.Errorf("tensor %q differs", tn.Name)
				}
			}
			if names := dirNames(t, dir); !slices.Equal(names, []string{"model.safetensors"}) {
				t.Errorf("directory holds %v", names)
			}
			if runtime.GOOS != "windows" {
				st, err := os.Stat(path)
				if err != nil {
					t.Fatal(err)
				}
				if st.Mode().Perm() != 0o600 {
					t.Errorf("mode = %v, want the old file's 0600", st.Mode().Perm())
				}
			}
		})
	}
}

func TestWriteRelativePath(t *testing.T) {
	t.Chdir(t.TempDir())
	if err := safetensors.Write("rel.safetensors", []safetensors.Tensor{makeTensor(t, "a", safetensors.U8, []int64{3}, 1)}, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := safetensors.Read("rel.safetensors"); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat("rel.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" && st.Mode().Perm() != 0o644 {
		t.Errorf("new file mode = %v, want 0644", st.Mode().Perm())
	}
	if names := dirNames(t, "."); !slices.Equal(names, []string{"rel.safetensors"}) {
		t.Errorf("directory holds %v", names)
	}
}
