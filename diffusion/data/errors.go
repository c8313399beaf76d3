package data

import (
	"errors"
	"io/fs"
)

// sentinel is an error value with a parent that errors.Is also matches.
type sentinel struct {
	msg    string
	parent error
}

func (e *sentinel) Error() string { return e.msg }
func (e *sentinel) Unwrap() error { return e.parent }

// Sentinel errors, matched with errors.Is.
var (
	// ErrNotFound reports a missing file or directory. An error matching it
	// also matches fs.ErrNotExist.
	ErrNotFound error = &sentinel{"no such file or directory", fs.ErrNotExist}
	// ErrFormat reports a file whose contents are not what its reader
	// expects: a wrong magic number, impossible dimensions, a size that does
	// not fit the format, labels out of range or an image that fails to
	// decode.
	ErrFormat = errors.New("invalid format")
	// ErrTruncated reports a file shorter than its header says. An error
	// matching it also matches ErrFormat.
	ErrTruncated error = &sentinel{"truncated", ErrFormat}
	// ErrNoImages reports a directory or file that holds no images.
	ErrNoImages = errors.New("no images")
	// ErrClosed is returned by Loader.Next after Close.
	ErrClosed = errors.New("data: use of a closed loader")
)

// A FileError reports a dataset file or directory that cannot be used.
type FileError struct {
	Path   string // the file or directory at fault
	Err    error  // one of ErrNotFound, ErrFormat, ErrTruncated or ErrNoImages
	Detail string // what is wrong and what to do about it; may be empty
	Cause  error  // the underlying error (I/O, gzip, image decoder), if any
}

// Error reads "data: no such file or directory: PATH" for a missing path and
// "data: PATH: KIND: DETAIL" otherwise.
func (e *FileError) Error() string {
	var s string
	if e.Err == ErrNotFound {
		s = "data: " + e.Err.Error() + ": " + e.Path
		if e.Detail != "" {
			s += "; " + e.Detail
		}
		return s
	}
	s = "data: " + e.Path + ": " + e.Err.Error()
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

// Unwrap returns the sentinel and, if there is one, the underlying cause.
func (e *FileError) Unwrap() []error {
	if e.Cause == nil {
		return []error{e.Err}
	}
	return []error{e.Err, e.Cause}
}

func notFound(path string, cause error) error {
	return &FileError{Path: path, Err: ErrNotFound, Cause: cause}
}
