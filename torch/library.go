package torch

// #include "ddpm_torch.h"
import "C"

import (
	"bytes"
	"os"
	"runtime"
	"strconv"
	"sync"
	"unsafe"
)

// Version is the version of the libtorch the shim was built against.
func Version() string {
	buf := make([]byte, 64)
	C.ddpm_version((*C.char)(unsafe.Pointer(&buf[0])), C.size_t(len(buf)))
	return cString(buf)
}

// BLAS is how the BLAS under libtorch's CPU matrix products (linear layers,
// attention's products) describes itself: OpenBLAS's configuration line,
// which names the kernels it chose for this CPU ("OpenBLAS 0.3.21 ...
// Cooperlake ..."; OPENBLAS_CORETYPE chooses others), or "" for another
// BLAS.
func BLAS() string {
	buf := make([]byte, 256)
	C.ddpm_blas_config((*C.char)(unsafe.Pointer(&buf[0])), C.size_t(len(buf)))
	return cString(buf)
}

// cString is buf up to its first NUL.
func cString(buf []byte) string {
	if i := bytes.IndexByte(buf, 0); i >= 0 {
		return string(buf[:i])
	}
	return string(buf)
}

// CUDAAvailable reports whether libtorch has CUDA and at least one GPU.
func CUDAAvailable() bool { return C.ddpm_cuda_available() != 0 }

// CPUHasBF16 reports whether this CPU has bfloat16 arithmetic instructions
// (x86 AVX512_BF16 or AMX-BF16, ARM BF16). Without them bfloat16 still
// computes, by conversion through float32, but more slowly than float32.
func CPUHasBF16() bool { return C.ddpm_cpu_has_bf16() != 0 }

// CUDADeviceCount is the number of usable GPUs (0 on a CPU-only libtorch).
func CUDADeviceCount() int { return int(C.ddpm_cuda_device_count()) }

// SetNumThreads sets libtorch's intra-op thread pool size. It is
// process-wide, and it is the program's choice: once it has succeeded,
// UseDefaultThreads leaves the count alone.
func SetNumThreads(n int) error {
	return threads.set(n)
}

// DefaultThreads is the intra-op thread count this library picks when the
// program sets none: 0 (keep libtorch's own, which follows the variable)
// when OMP_NUM_THREADS is set; in a distributed job (RANK set), the CPUs
// divided among the machine's ranks (LOCAL_WORLD_SIZE), or 1 without that
// variable, as torchrun does; else every CPU this process may use
// (runtime.NumCPU). libtorch's own default can be lower (one thread on a
// 2-CPU machine).
func DefaultThreads() int { return defaultThreads(os.Getenv, runtime.NumCPU()) }

func defaultThreads(getenv func(string) string, cpus int) int {
	if getenv("OMP_NUM_THREADS") != "" {
		return 0
	}
	if getenv("RANK") != "" {
		if local, err := strconv.Atoi(getenv("LOCAL_WORLD_SIZE")); err == nil && local > 0 {
			return max(1, cpus/local)
		}
		return 1
	}
	return cpus
}

// UseDefaultThreads sets the intra-op thread count to DefaultThreads, once
// per process; later calls return the first call's result. It does nothing
// when the program has already called SetNumThreads successfully or when
// DefaultThreads is 0. Library code that starts heavy work (sampling,
// training) calls it; a program that wants another count calls
// SetNumThreads before.
func UseDefaultThreads() error { return threads.useDefault(DefaultThreads) }

// threads is the process's intra-op thread setting.
var threads = threadSetting{apply: func(n int) error {
	return takeError("set_num_threads", C.ddpm_set_num_threads(C.int32_t(n)))
}}

// threadSetting remembers whether the program chose the thread count, so
// that the library default never overrides it.
type threadSetting struct {
	apply func(n int) error // sets the count in libtorch

	mu       sync.Mutex // orders an explicit setting against the default
	explicit bool       // SetNumThreads succeeded
	once     sync.Once
	err      error // the default's result
}

// set applies an explicit count.
func (ts *threadSetting) set(n int) error {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if err := ts.apply(n); err != nil {
		return err
	}
	ts.explicit = true
	return nil
}

// useDefault applies count() the first time it is called, unless an
// explicit count came first.
func (ts *threadSetting) useDefault(count func() int) error {
	ts.once.Do(func() {
		ts.mu.Lock()
		defer ts.mu.Unlock()
		if ts.explicit {
			return
		}
		if n := count(); n > 0 {
			ts.err = ts.apply(n)
		}
	})
	return ts.err
}

// NumThreads is libtorch's intra-op thread pool size.
func NumThreads() int { return int(C.ddpm_get_num_threads()) }
