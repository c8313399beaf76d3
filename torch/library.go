package torch

// #include "ddpm_torch.h"
import "C"

import "unsafe"

// Version is the version of the libtorch the shim was built against.
func Version() string {
	buf := make([]byte, 64)
	C.ddpm_version((*C.char)(unsafe.Pointer(&buf[0])), C.size_t(len(buf)))
	for i, b := range buf {
		if b == 0 {
			return string(buf[:i])
		}
	}
	return string(buf)
}

// CUDAAvailable reports whether libtorch has CUDA and at least one GPU.
func CUDAAvailable() bool { return C.ddpm_cuda_available() != 0 }

// CUDADeviceCount is the number of usable GPUs (0 on a CPU-only libtorch).
func CUDADeviceCount() int { return int(C.ddpm_cuda_device_count()) }

// SetNumThreads sets libtorch's intra-op thread pool size. It is process-wide.
func SetNumThreads(n int) error {
	return takeError("set_num_threads", C.ddpm_set_num_threads(C.int32_t(n)))
}

// NumThreads is libtorch's intra-op thread pool size.
func NumThreads() int { return int(C.ddpm_get_num_threads()) }
