package safetensors

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"unicode/utf8"
)

// Write stores tensors and metadata at path in the safetensors format.
//
// Tensors are laid out in the data section sorted by name. The header JSON
// lists keys in sorted order ("__metadata__" first, and only if metadata is
// non-empty) and is padded with spaces so that the data section starts at
// a multiple of 8 bytes.
//
// Every tensor is checked before anything is written: names must be
// non-empty, valid UTF-8, unique and not "__metadata__"; dtypes must be
// known; dimensions must be >= 0; and len(Data) must equal the number of
// elements times the dtype size. Metadata keys and values must be valid
// UTF-8.
//
// The write is atomic: data goes to a temporary file in the same directory,
// which is synced, closed and renamed over path, after which the directory
// is synced. On any error the temporary file is removed and an existing
// file at path is left untouched. A file that replaces an existing one
// keeps its permission bits; a new file gets mode 0644.
func Write(path string, tensors []Tensor, metadata map[string]string) error {
	header, err := buildHeader(tensors, metadata)
	if err != nil {
		return fmt.Errorf("safetensors: write %s: %w", path, err)
	}
	if err := writeAtomic(path, header, sortedByName(tensors)); err != nil {
		return fmt.Errorf("safetensors: write %s: %w", path, err)
	}
	return nil
}

// sortedByName returns a copy of tensors sorted by name.
func sortedByName(tensors []Tensor) []Tensor {
	s := make([]Tensor, len(tensors))
	copy(s, tensors)
	sort.Slice(s, func(i, j int) bool { return s[i].Name < s[j].Name })
	return s
}

// buildHeader validates the tensors and metadata and returns the padded
// header JSON (without the 8-byte length prefix).
func buildHeader(tensors []Tensor, metadata map[string]string) ([]byte, error) {
	seen := make(map[string]bool, len(tensors))
	for i, t := range tensors {
		switch {
		case t.Name == "":
			return nil, fmt.Errorf("tensor %d has an empty name", i)
		case !utf8.ValidString(t.Name):
			return nil, fmt.Errorf("tensor %d: name %q is not valid utf-8", i, t.Name)
		case t.Name == metadataKey:
			return nil, fmt.Errorf("tensor %d: name %q is reserved", i, t.Name)
		case seen[t.Name]:
			return nil, fmt.Errorf("duplicate tensor name %q", t.Name)
		}
		seen[t.Name] = true
		size, err := t.DType.Size()
		if err != nil {
			return nil, fmt.Errorf("tensor %q: unknown dtype %q", t.Name, string(t.DType))
		}
		n, err := numBytes(t.Shape, size)
		if err != nil {
			return nil, fmt.Errorf("tensor %q: %v", t.Name, err)
		}
		if int64(len(t.Data)) != n {
			return nil, fmt.Errorf("tensor %q: data has %d bytes but shape %v of %s needs %d",
				t.Name, len(t.Data), t.Shape, t.DType, n)
		}
	}
	for k, v := range metadata {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return nil, fmt.Errorf("metadata entry %q is not valid utf-8", k)
		}
	}

	var b bytes.Buffer
	b.WriteByte('{')
	first := true
	comma := func() {
		if !first {
			b.WriteByte(',')
		}
		first = false
	}
	if len(metadata) > 0 {
		comma()
		writeString(&b, metadataKey)
		b.WriteString(":{")
		keys := make([]string, 0, len(metadata))
		for k := range metadata {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for i, k := range keys {
			if i > 0 {
				b.WriteByte(',')
			}
			writeString(&b, k)
			b.WriteByte(':')
			writeString(&b, metadata[k])
		}
		b.WriteByte('}')
	}
	var off int64
	for _, t := range sortedByName(tensors) {
		comma()
		writeString(&b, t.Name)
		b.WriteString(`:{"dtype":`)
		writeString(&b, string(t.DType))
		b.WriteString(`,"shape":[`)
		for i, d := range t.Shape {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strconv.FormatInt(d, 10))
		}
		end := off + int64(len(t.Data))
		fmt.Fprintf(&b, `],"data_offsets":[%d,%d]}`, off, end)
		off = end
	}
	b.WriteByte('}')
	for (8+b.Len())%8 != 0 {
		b.WriteByte(' ')
	}
	return b.Bytes(), nil
}

// writeString appends s as a JSON string without HTML escaping.
func writeString(b *bytes.Buffer, s string) {
	enc := json.NewEncoder(b)
	enc.SetEscapeHTML(false)
	// Encoding a valid UTF-8 string cannot fail.
	_ = enc.Encode(s)
	// Encode appends a newline; drop it.
	b.Truncate(b.Len() - 1)
}

// writeAtomic writes the length prefix, header and tensor data to a
// temporary file next to path and renames it into place.
func writeAtomic(path string, header []byte, tensors []Tensor) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	mode := fs.FileMode(0o644)
	if st, err := os.Stat(path); err == nil && st.Mode().IsRegular() {
		mode = st.Mode().Perm()
	}

	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	closed, renamed := false, false
	defer func() {
		if err != nil && !renamed {
			if !closed {
				f.Close()
			}
			os.Remove(tmp)
		}
	}()

	w := bufio.NewWriterSize(f, 1<<20)
	var lenBuf [8]byte
	binary.LittleEndian.PutUint64(lenBuf[:], uint64(len(header)))
	if _, err = w.Write(lenBuf[:]); err != nil {
		return err
	}
	if _, err = w.Write(header); err != nil {
		return err
	}
	for _, t := range tensors {
		if _, err = w.Write(t.Data); err != nil {
			return err
		}
	}
	if err = w.Flush(); err != nil {
		return err
	}
	if err = f.Chmod(mode); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	closed = true
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	renamed = true
	return syncDir(dir)
}

// syncDir flushes a directory entry change (the rename) to stable storage.
// Platforms that cannot sync a directory are tolerated.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	cerr := d.Close()
	if err != nil {
		if errors.Is(err, errors.ErrUnsupported) || errors.Is(err, syscall.EINVAL) {
			return nil
		}
		return err
	}
	return cerr
}
