package data

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// MaxFileBytes bounds the decompressed size of a dataset file.
const MaxFileBytes = 1 << 32

// readFile reads a whole dataset file, decompressing it when it starts with
// the gzip magic bytes (whatever its name). gzipped reports whether it did.
//
// size, when not nil, reads the size the file's header claims from its
// first bytes (as many as it needs, up to 16; false when it cannot tell).
// A compressed file is then inflated only up to that size plus one byte, so
// a few kilobytes of gzip cannot expand into gigabytes before the size
// check; the extra byte still lets the caller see that the file is too
// long. Every file is bounded by MaxFileBytes.
func readFile(path string, size func(head []byte) (int64, bool)) (b []byte, gzipped bool, err error) {
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, notFound(path, err)
	}
	if err != nil {
		return nil, false, fmt.Errorf("data: %w", err)
	}
	if len(raw) < 2 || raw[0] != 0x1f || raw[1] != 0x8b {
		return raw, false, nil
	}
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err == nil {
		head := make([]byte, 16)
		var n int
		n, err = io.ReadFull(zr, head)
		if err == io.ErrUnexpectedEOF || err == io.EOF {
			return head[:n], true, nil // shorter than any header; the parser says so
		}
		limit := int64(MaxFileBytes)
		if claimed, ok := int64(0), false; err == nil && size != nil {
			if claimed, ok = size(head); ok {
				if claimed > MaxFileBytes {
					return nil, true, &FileError{Path: path, Err: ErrFormat,
						Detail: fmt.Sprintf("the header claims %d bytes, more than the %d accepted", claimed, int64(MaxFileBytes))}
				}
				limit = claimed + 1
			}
		}
		if err == nil {
			var rest []byte
			rest, err = io.ReadAll(io.LimitReader(zr, max(limit-int64(len(head)), 0)))
			b = append(head, rest...)
			if err == nil && size == nil && int64(len(b)) >= MaxFileBytes {
				return nil, true, &FileError{Path: path, Err: ErrFormat,
					Detail: fmt.Sprintf("it decompresses to more than %d bytes", int64(MaxFileBytes))}
			}
		}
	}
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF):
		return nil, true, &FileError{Path: path, Err: ErrTruncated, Cause: err,
			Detail: "the gzip stream ends early; download the file again"}
	case err != nil:
		return nil, true, &FileError{Path: path, Err: ErrFormat, Cause: err,
			Detail: fmt.Sprintf("corrupt gzip data (%v); download the file again", err)}
	}
	return b, true, nil
}

// sizeNoun describes the length of what readFile returned, for messages.
func sizeNoun(n int, gzipped bool) string {
	if gzipped {
		return fmt.Sprintf("file has %d bytes once decompressed", n)
	}
	return fmt.Sprintf("file has %d bytes", n)
}
