package torch

import (
	"errors"
	"fmt"
	"strings"
)

// Error is a failure reported by libtorch (or by the shim's own checks), with
// libtorch's message.
type Error struct {
	Op  string // the operation that failed, e.g. "conv2d"
	Msg string // libtorch's message, without its C++ backtrace
}

// Error is one line: libtorch's first line, with a note when Msg has more
// (some libtorch messages list every registered backend).
func (e *Error) Error() string {
	first, rest, more := strings.Cut(e.Msg, "\n")
	if more && strings.TrimSpace(rest) != "" {
		return fmt.Sprintf("torch: %s: %s [...]", e.Op, first)
	}
	return fmt.Sprintf("torch: %s: %s", e.Op, first)
}

// ErrClosed is reported when a closed tensor, scope or generator is used.
var ErrClosed = errors.New("torch: use of a closed tensor, scope or generator")
