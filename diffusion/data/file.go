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

// readFile reads a whole dataset file, decompressing it when it starts with
// the gzip magic bytes (whatever its name). gzipped reports whether it did.
func readFile(path string) (b []byte, gzipped bool, err error) {
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
		b, err = io.ReadAll(zr)
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
