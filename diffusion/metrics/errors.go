package metrics

import (
	"errors"
	"fmt"
)

// Sentinel errors for reference files, matched with errors.Is.
var (
	// ErrFormat reports a file whose contents are not a usable .npz of
	// statistics: not a zip archive, a missing entry, a bad .npy header, an
	// unsupported dtype, shapes that do not fit together or non-finite
	// values.
	ErrFormat = errors.New("invalid statistics file")
	// ErrTruncated reports an entry shorter than its header says. An error
	// matching it also matches ErrFormat.
	ErrTruncated = errors.New("truncated data")
)

// A FileError reports a statistics file that cannot be read or written.
type FileError struct {
	Path string // the file at fault
	Err  error  // what is wrong; matches ErrFormat, ErrTruncated or an I/O error
}

// Error reads "metrics: PATH: PROBLEM".
func (e *FileError) Error() string { return "metrics: " + e.Path + ": " + e.Err.Error() }

// Unwrap returns the underlying error.
func (e *FileError) Unwrap() error { return e.Err }

// formatError is a problem with a file's contents. It matches ErrFormat, and
// ErrTruncated as well when truncated is set.
type formatError struct {
	msg       string
	truncated bool
}

func (e *formatError) Error() string { return e.msg }

func (e *formatError) Is(target error) bool {
	return target == ErrFormat || (e.truncated && target == ErrTruncated)
}

func errorf(format string, args ...any) error {
	return &formatError{msg: fmt.Sprintf(format, args...)}
}

func truncatedf(format string, args ...any) error {
	return &formatError{msg: fmt.Sprintf(format, args...), truncated: true}
}
