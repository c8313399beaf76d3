package torch

// #include <stdlib.h>
// #include "ddpm_torch.h"
import "C"

import (
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"unsafe"
)

// maxModuleOutputs bounds the tensors one module call may return.
const maxModuleOutputs = 64

// Module is a TorchScript module loaded from a file written by
// torch.jit.save, in eval mode. Close releases it; the garbage collector
// releases a forgotten one only as a backstop. A Module may be called from
// many goroutines but must not be closed while a call is running.
type Module struct {
	h       C.ddpm_module
	path    string
	closed  atomic.Bool
	cleanup runtime.Cleanup
}

// LoadModule loads a TorchScript file (written by torch.jit.save) onto dev.
// Errors name the path; a missing file gives an error that matches
// fs.ErrNotExist.
func LoadModule(path string, dev Device) (*Module, error) {
	// libtorch's own message for a missing file lacks the reason.
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("load TorchScript module: %w", err)
	}
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var h C.ddpm_module
	if err := takeError("load_module", C.ddpm_module_load(cpath, dev.cType(), dev.cIndex(), &h)); err != nil {
		return nil, fmt.Errorf("load TorchScript module %s: %w", path, err)
	}
	m := &Module{h: h, path: path}
	m.cleanup = runtime.AddCleanup(m, func(h C.ddpm_module) { C.ddpm_module_free(h) }, h)
	return m, nil
}

// Close releases the module now. It is safe to call more than once and on nil.
func (m *Module) Close() {
	if m == nil || !m.closed.CompareAndSwap(false, true) {
		return
	}
	m.cleanup.Stop()
	C.ddpm_module_free(m.h)
	m.h = nil
}

// Path is the file the module was loaded from.
func (m *Module) Path() string {
	if m == nil {
		return ""
	}
	return m.path
}

func (m *Module) handle() C.ddpm_module {
	if m == nil || m.closed.Load() {
		return nil
	}
	return m.h
}

// Forward calls the module's forward method with tensor arguments, in the
// scope's mode. A module that returns one tensor gives a slice of one; one
// that returns a tuple or list of tensors gives them in order. The results
// belong to the scope.
func (s *Scope) Forward(m *Module, args ...*Tensor) []*Tensor {
	return s.callModule("module forward", m, nil, args)
}

// CallMethod calls a method of the module other than forward (one marked
// @torch.jit.export, say), like Forward. A method of a submodule is named by
// its path, "layers.forward".
func (s *Scope) CallMethod(m *Module, method string, args ...*Tensor) []*Tensor {
	op := "module method " + method
	if method == "" {
		s.fail(&Error{Op: op, Msg: "empty method name"})
		return nil
	}
	return s.callModule(op, m, &method, args)
}

func (s *Scope) callModule(op string, m *Module, method *string, args []*Tensor) []*Tensor {
	if !s.ready(op, args...) {
		return nil
	}
	mh := m.handle()
	if mh == nil {
		s.fail(&Error{Op: op, Msg: "nil or closed module"})
		return nil
	}
	var cmethod *C.char
	if method != nil {
		cmethod = C.CString(*method)
		defer C.free(unsafe.Pointer(cmethod))
	}
	hs, err := handles(op, args)
	if err != nil {
		s.fail(err)
		return nil
	}
	outs := make([]C.ddpm_tensor, maxModuleOutputs) // C pointers only: cgo may fill it
	var n C.int64_t
	e := C.ddpm_module_forward(s.mode, mh, cmethod, first(hs), C.int64_t(len(hs)), &outs[0],
		C.int64_t(len(outs)), &n)
	runtime.KeepAlive(m)
	if !s.check(op, e, args...) {
		return nil
	}
	res := make([]*Tensor, int(n))
	for i := range res {
		res[i] = newTensor(outs[i])
	}
	s.Adopt(res...)
	return res
}
