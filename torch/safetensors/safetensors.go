// Package safetensors reads and writes files in the safetensors format.
//
// A safetensors file is laid out as:
//
//   - 8 bytes: little-endian uint64 N, the length of the header;
//   - N bytes: a UTF-8 JSON object (the header);
//   - the data section: the raw bytes of every tensor, back to back.
//
// The header maps each tensor name to an object
//
//	{"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}
//
// where the offsets are byte positions relative to the start of the data
// section. An optional "__metadata__" key maps to an object of string
// values. Tensor data is stored little-endian in row-major order.
//
// Reading validates the header strictly: every tensor must have a known
// dtype, a non-negative shape whose byte size matches its offsets, and the
// tensors together must cover the data section exactly, with no overlaps,
// gaps or trailing bytes. Every validation failure wraps [ErrInvalid].
//
// Writing is atomic: the file is written to a temporary file in the same
// directory, synced, and renamed over the destination.
package safetensors

import (
	"errors"
	"fmt"
)

// ErrInvalid is wrapped by every error that reports a malformed
// safetensors file, so callers can test for it with [errors.Is].
var ErrInvalid = errors.New("invalid safetensors file")

// maxHeaderSize is the largest header length accepted on read (100 MiB).
// Larger values are taken as a sign of a corrupt or foreign file.
const maxHeaderSize = 100 << 20

// metadataKey is the reserved header key holding the string metadata.
const metadataKey = "__metadata__"

// DType is a safetensors dtype string such as "F32".
type DType string

// Element types written and read by this package.
const (
	// F16 is IEEE 754 half precision (2 bytes).
	F16 DType = "F16"
	// BF16 is bfloat16 (2 bytes).
	BF16 DType = "BF16"
	// F32 is IEEE 754 single precision (4 bytes).
	F32 DType = "F32"
	// F64 is IEEE 754 double precision (8 bytes).
	F64 DType = "F64"
	// I64 is a signed 64-bit integer (8 bytes).
	I64 DType = "I64"
	// Bool is a boolean stored as one byte, 0 or 1.
	Bool DType = "BOOL"
	// U8 is an unsigned 8-bit integer (1 byte).
	U8 DType = "U8"
	// I8 is a signed 8-bit integer (1 byte).
	I8 DType = "I8"
	// I16 is a signed 16-bit integer (2 bytes).
	I16 DType = "I16"
	// I32 is a signed 32-bit integer (4 bytes).
	I32 DType = "I32"
)

// Size returns the number of bytes per element of d, or an error if d is
// not a dtype this package knows.
func (d DType) Size() (int, error) {
	switch d {
	case Bool, U8, I8:
		return 1, nil
	case F16, BF16, I16:
		return 2, nil
	case F32, I32:
		return 4, nil
	case F64, I64:
		return 8, nil
	}
	return 0, fmt.Errorf("safetensors: unknown dtype %q", string(d))
}

// Entry describes where one tensor lies in a file.
type Entry struct {
	// Name is the tensor's key in the header.
	Name string
	// DType is the element type.
	DType DType
	// Shape holds the dimensions; an empty shape denotes a scalar.
	Shape []int64
	// Begin and End are byte offsets within the data section; the tensor
	// occupies [Begin, End). They are equal for a zero-element tensor.
	Begin, End int64
}

// Header is the parsed and validated header of a safetensors file.
type Header struct {
	// Metadata holds the "__metadata__" strings, or nil if the file has none.
	Metadata map[string]string
	// Entries lists the tensors sorted by Begin offset (ties broken by
	// End, then by Name).
	Entries []Entry
	// DataStart is the absolute file offset of the data section (8 + N).
	DataStart int64
}

// Tensor is one tensor handed to [Write].
type Tensor struct {
	// Name is the tensor's key; it must be non-empty, valid UTF-8, unique
	// within a file, and not "__metadata__".
	Name string
	// DType is the element type.
	DType DType
	// Shape holds the dimensions, each >= 0; an empty shape is a scalar.
	Shape []int64
	// Data holds the little-endian, row-major element bytes; its length
	// must equal the product of Shape times the dtype size.
	Data []byte
}

// numBytes returns the product of shape times size, or an error if a
// dimension is negative or the result overflows int64.
func numBytes(shape []int64, size int) (int64, error) {
	for i, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("shape %v has negative dimension %d at index %d", shape, d, i)
		}
	}
	for _, d := range shape {
		if d == 0 {
			return 0, nil
		}
	}
	n := int64(size)
	for _, d := range shape {
		if n > maxInt64/d {
			return 0, fmt.Errorf("shape %v overflows: byte size exceeds int64", shape)
		}
		n *= d
	}
	return n, nil
}

const maxInt64 = 1<<63 - 1
