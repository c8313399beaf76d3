package torch

// All cgo directives of the module live here. The shim library is found next
// to the binary ($ORIGIN/../lib, so bin/ and lib/ move together) and, for test
// binaries built in temporary folders, in the source tree's lib/.

// #cgo CFLAGS: -I${SRCDIR}/../csrc
// #cgo LDFLAGS: -L${SRCDIR}/../lib -lddpmtorch -Wl,-rpath,$ORIGIN/../lib -Wl,-rpath,${SRCDIR}/../lib
// #include <stdlib.h>
// #include "ddpm_torch.h"
import "C"

import "unsafe"

// takeError converts a shim error (NULL = success) into a Go error and frees
// the C string.
func takeError(op string, e C.ddpm_error) error {
	if e == nil {
		return nil
	}
	msg := C.GoString(e)
	C.free(unsafe.Pointer(e))
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
