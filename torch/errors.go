package torch

import (
	"errors"
	"fmt"
)

// Error is a failure reported by libtorch (or by the shim's own checks), with
// libtorch's message.
type Error struct {
	Op  string // the operation that failed, e.g. "conv2d"
	Msg string // libtorch's message, without its C++ backtrace
}

func (e *Error) Error() string { return fmt.Sprintf("torch: %s: %s", e.Op, e.Msg) }

// ErrClosed is reported when a closed tensor or scope is used.
var ErrClosed = errors.New("torch: use of a closed tensor or scope")
