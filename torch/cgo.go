package torch

// All cgo directives of the module live here. The shim library is found next
// to the binary ($ORIGIN/../lib, so bin/ and lib/ move together) and, for test
// binaries built in temporary folders, in the source tree's lib/.

// #cgo CFLAGS: -I${SRCDIR}/../csrc
// #cgo LDFLAGS: -L${SRCDIR}/../lib -lddpmtorch -Wl,-rpath,$ORIGIN/../lib -Wl,-rpath,${SRCDIR}/../lib
// #include <stdlib.h>
// #include "ddpm_torch.h"
import "C"

import (
	"runtime"
	"unsafe"
)

// keepAlive keeps tensors reachable up to the point where it is called. Every
// shim call that is given tensor handles is followed by it.
//
// A tensor that no scope owns (kept out of one with Keep, say) is freed by
// its garbage-collector cleanup once nothing refers to it. A wrapper that
// reads t.h and then only waits for the C call no longer refers to t, so
// without this a collection during the call could free the handle the C++
// side is working on. runtime.KeepAlive has to come after the call, so it
// cannot live in the function that checks the inputs and takes their
// handles (Scope.ready, handles); instead the single function that every
// result passes through afterwards does it: Scope.wrap and Scope.check take
// the call's tensor inputs and keep them alive. Calls whose result does not
// go through a scope (Tensor methods, AdamWStep, the collectives) call
// keepAlive themselves. TestShimCallsKeepTheirTensorsAlive checks the source
// for calls that do neither.
func keepAlive(ts ...*Tensor) {
	for _, t := range ts {
		runtime.KeepAlive(t)
	}
}

// outOfMemory is the shim's static error for a message it could not
// allocate: an error like any other, but not to be freed.
var outOfMemory = C.ddpm_out_of_memory_error()

// takeError converts a shim error (NULL = success) into a Go error and frees
// the C string (except the static out-of-memory error).
func takeError(op string, e C.ddpm_error) error {
	if e == nil {
		return nil
	}
	msg := C.GoString(e)
	if e != outOfMemory {
		C.free(unsafe.Pointer(e))
	}
	return &Error{Op: op, Msg: msg}
}

// int64s returns a C view of a Go slice of int64 (no Go pointers inside, so
// cgo may pass it directly) and its length.
func int64s(v []int64) (*C.int64_t, C.int64_t) {
	if len(v) == 0 {
		return nil, 0
	}
	return (*C.int64_t)(unsafe.Pointer(&v[0])), C.int64_t(len(v))
}
