package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"unicode/utf8"
)

// ReadHeader parses and validates only the header of the file at path; no
// tensor data is read.
func ReadHeader(path string) (*Header, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	return parseHeader(f, st.Size(), path)
}

// ParseHeader reads and validates a safetensors header from r, given the
// total size of the file in bytes. The data section is not read, but the
// header must describe exactly fileSize-DataStart bytes of tensor data.
// If r has a Name() string method (as *os.File does), errors name it.
func ParseHeader(r io.ReaderAt, fileSize int64) (*Header, error) {
	name := "input"
	if n, ok := r.(interface{ Name() string }); ok {
		name = n.Name()
	}
	return parseHeader(r, fileSize, name)
}

// Read reads the whole file at path once, validates it, and returns its
// header together with each tensor's bytes keyed by name. The byte slices
// alias a single buffer holding the file; each has its capacity clipped to
// its own length, so appending to one never overwrites another.
func Read(path string) (*Header, map[string][]byte, error) {
	buf, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("safetensors: %w", err)
	}
	h, err := parseHeader(bytes.NewReader(buf), int64(len(buf)), path)
	if err != nil {
		return nil, nil, err
	}
	data := make(map[string][]byte, len(h.Entries))
	for _, e := range h.Entries {
		b, end := h.DataStart+e.Begin, h.DataStart+e.End
		data[e.Name] = buf[b:end:end]
	}
	return h, data, nil
}

// invalid builds an error wrapping ErrInvalid that names the file.
func invalid(name, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrInvalid, name, fmt.Sprintf(format, args...))
}

func parseHeader(r io.ReaderAt, fileSize int64, name string) (*Header, error) {
	if fileSize < 8 {
		return nil, invalid(name, "truncated: file has %d bytes, fewer than the 8-byte header length", fileSize)
	}
	var lenBuf [8]byte
	if err := readFull(r, lenBuf[:], 0); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, invalid(name, "truncated: cannot read the 8-byte header length")
		}
		return nil, fmt.Errorf("safetensors: read %s: %w", name, err)
	}
	n := binary.LittleEndian.Uint64(lenBuf[:])
	if n > maxHeaderSize {
		return nil, invalid(name, "header length %d exceeds the limit of %d bytes", n, maxHeaderSize)
	}
	if int64(n) > fileSize-8 {
		return nil, invalid(name, "truncated: header length %d exceeds the %d bytes that follow it", n, fileSize-8)
	}
	raw := make([]byte, n)
	if err := readFull(r, raw, 8); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, invalid(name, "truncated: cannot read the %d-byte header", n)
		}
		return nil, fmt.Errorf("safetensors: read %s: %w", name, err)
	}
	h := &Header{DataStart: 8 + int64(n)}
	if err := decodeHeader(raw, h); err != nil {
		return nil, invalid(name, "%s", err.Error())
	}
	if err := checkLayout(h.Entries, fileSize-h.DataStart); err != nil {
		return nil, invalid(name, "%s", err.Error())
	}
	return h, nil
}

// readFull fills p from r at off; a short read is reported as
// io.ErrUnexpectedEOF.
func readFull(r io.ReaderAt, p []byte, off int64) error {
	got, err := r.ReadAt(p, off)
	if got == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// decodeHeader parses the JSON header into h.Metadata and h.Entries. It
// walks the top-level object token by token so that duplicate keys, which
// encoding/json would silently merge, are caught.
func decodeHeader(raw []byte, h *Header) error {
	if !utf8.Valid(raw) {
		return errors.New("header json is not valid utf-8")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("header is not valid json: %v", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return errors.New("header json is not an object")
	}
	seen := make(map[string]bool)
	sawMetadata := false
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return fmt.Errorf("header is not valid json: %v", err)
		}
		key, ok := tok.(string)
		if !ok {
			return errors.New("header is not valid json: object key is not a string")
		}
		var val json.RawMessage
		if err := dec.Decode(&val); err != nil {
			return fmt.Errorf("header is not valid json: %v", err)
		}
		if key == metadataKey {
			if sawMetadata {
				return errors.New("duplicate __metadata__ key")
			}
			sawMetadata = true
			md, err := decodeMetadata(val)
			if err != nil {
				return err
			}
			h.Metadata = md
			continue
		}
		if seen[key] {
			return fmt.Errorf("duplicate tensor name %q", key)
		}
		seen[key] = true
		e, err := decodeEntry(key, val)
		if err != nil {
			return err
		}
		h.Entries = append(h.Entries, e)
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return fmt.Errorf("header is not valid json: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("header is not valid json: unexpected data after the top-level object")
	}
	return nil
}

// firstByte returns the first byte of a JSON value (RawMessage values
// carry no leading whitespace, but be tolerant).
func firstByte(v json.RawMessage) byte {
	v = bytes.TrimLeft(v, " \t\r\n")
	if len(v) == 0 {
		return 0
	}
	return v[0]
}

func decodeMetadata(val json.RawMessage) (map[string]string, error) {
	switch firstByte(val) {
	case 'n': // null: no metadata
		return nil, nil
	case '{':
	default:
		return nil, errors.New("__metadata__ is not a json object")
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(val, &fields); err != nil {
		return nil, fmt.Errorf("__metadata__ is not valid json: %v", err)
	}
	md := make(map[string]string, len(fields))
	for k, v := range fields {
		if firstByte(v) != '"' {
			return nil, fmt.Errorf("__metadata__ value for key %q is not a string", k)
		}
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return nil, fmt.Errorf("__metadata__ value for key %q is not a string: %v", k, err)
		}
		md[k] = s
	}
	return md, nil
}

func decodeEntry(name string, val json.RawMessage) (Entry, error) {
	e := Entry{Name: name}
	if firstByte(val) != '{' {
		return e, fmt.Errorf("tensor %q: entry is not a json object", name)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(val, &fields); err != nil {
		return e, fmt.Errorf("tensor %q: entry is not valid json: %v", name, err)
	}

	dt, ok := fields["dtype"]
	if !ok {
		return e, fmt.Errorf("tensor %q: missing dtype", name)
	}
	var dts string
	if firstByte(dt) != '"' || json.Unmarshal(dt, &dts) != nil {
		return e, fmt.Errorf("tensor %q: dtype is not a json string", name)
	}
	e.DType = DType(dts)
	size, err := e.DType.Size()
	if err != nil {
		return e, fmt.Errorf("tensor %q: unknown dtype %q", name, dts)
	}

	sh, ok := fields["shape"]
	if !ok {
		return e, fmt.Errorf("tensor %q: missing shape", name)
	}
	e.Shape, err = decodeInts(sh)
	if err != nil {
		return e, fmt.Errorf("tensor %q: shape %v", name, err)
	}
	nbytes, err := numBytes(e.Shape, size)
	if err != nil {
		return e, fmt.Errorf("tensor %q: %v", name, err)
	}

	off, ok := fields["data_offsets"]
	if !ok {
		return e, fmt.Errorf("tensor %q: missing data_offsets", name)
	}
	offs, err := decodeInts(off)
	if err != nil {
		return e, fmt.Errorf("tensor %q: data_offsets %v", name, err)
	}
	if len(offs) != 2 {
		return e, fmt.Errorf("tensor %q: data_offsets has %d elements, want 2", name, len(offs))
	}
	e.Begin, e.End = offs[0], offs[1]
	if e.Begin < 0 || e.End < 0 {
		return e, fmt.Errorf("tensor %q: negative data_offsets [%d, %d]", name, e.Begin, e.End)
	}
	if e.Begin > e.End {
		return e, fmt.Errorf("tensor %q: data_offsets begin %d is after end %d", name, e.Begin, e.End)
	}
	if e.End-e.Begin != nbytes {
		return e, fmt.Errorf("tensor %q: data_offsets [%d, %d] span %d bytes but shape %v of %s needs %d",
			name, e.Begin, e.End, e.End-e.Begin, e.Shape, e.DType, nbytes)
	}
	return e, nil
}

// decodeInts parses a JSON array of integers. Unlike json.Unmarshal into
// []int64 it rejects null elements, floats and values outside int64.
func decodeInts(v json.RawMessage) ([]int64, error) {
	if firstByte(v) != '[' {
		return nil, errors.New("is not a json array")
	}
	var elems []json.RawMessage
	if err := json.Unmarshal(v, &elems); err != nil {
		return nil, fmt.Errorf("is not valid json: %v", err)
	}
	out := make([]int64, len(elems))
	for i, el := range elems {
		n, err := strconv.ParseInt(string(bytes.TrimSpace(el)), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("element %d (%s) is not an int64", i, el)
		}
		out[i] = n
	}
	return out, nil
}

// checkLayout sorts entries by offset and checks that they tile the data
// section [0, dataLen) exactly: no overlaps, no gaps, nothing past the end
// and nothing left over.
func checkLayout(entries []Entry, dataLen int64) error {
	sort.Slice(entries, func(i, j int) bool {
		a, b := entries[i], entries[j]
		if a.Begin != b.Begin {
			return a.Begin < b.Begin
		}
		if a.End != b.End {
			return a.End < b.End
		}
		return a.Name < b.Name
	})
	var pos int64
	prev := ""
	for i, e := range entries {
		switch {
		case e.Begin < pos:
			return fmt.Errorf("tensor %q at data_offsets [%d, %d] overlaps tensor %q ending at %d",
				e.Name, e.Begin, e.End, prev, pos)
		case e.Begin > pos:
			if i == 0 {
				return fmt.Errorf("gap in data section: bytes [0, %d) before tensor %q belong to no tensor",
					e.Begin, e.Name)
			}
			return fmt.Errorf("gap in data section: bytes [%d, %d) between tensors %q and %q belong to no tensor",
				pos, e.Begin, prev, e.Name)
		}
		pos = e.End
		prev = e.Name
	}
	if pos > dataLen {
		return fmt.Errorf("truncated: tensor data_offsets reach byte %d but the data section has only %d bytes",
			pos, dataLen)
	}
	if pos < dataLen {
		return fmt.Errorf("data section has %d trailing bytes after the last tensor", dataLen-pos)
	}
	return nil
}
