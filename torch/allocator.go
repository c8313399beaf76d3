package torch

// #include "ddpm_torch.h"
import "C"

import "time"

// CPUCacheStats describes the shim's caching allocator for CPU tensor
// memory. Blocks of 64 KiB and more are kept when their tensors are freed
// and handed out again for the next tensor of the same size (rounded up to
// a page), so a loop that repeats its shapes, as training and sampling do,
// takes no fresh memory from the system after its first iteration. Smaller
// blocks go to malloc directly and are not counted here.
//
// The idle bytes are capped by LimitBytes: a quarter of the machine's (or
// the cgroup's) memory, unless the environment variable DDPM_CPU_CACHE_MB
// set another figure when the library loaded, or SetCPUCacheLimit did
// since. Over the limit, the sizes asked for least recently are freed
// first.
type CPUCacheStats struct {
	InUseBytes     int64 // held by live tensors
	CachedBytes    int64 // idle, kept for reuse
	PeakInUseBytes int64 // the most ever in use at once
	LimitBytes     int64 // the most kept idle
	Hits           int64 // allocations served from the cache
	Misses         int64 // allocations that took new memory
}

// CPUCache returns the caching allocator's current figures.
func CPUCache() (CPUCacheStats, error) {
	var s C.ddpm_cache_stats
	if err := takeError("cpu_cache_stats", C.ddpm_cpu_cache_stats(&s)); err != nil {
		return CPUCacheStats{}, err
	}
	return CPUCacheStats{
		InUseBytes:     int64(s.in_use_bytes),
		CachedBytes:    int64(s.cached_bytes),
		PeakInUseBytes: int64(s.peak_in_use_bytes),
		LimitBytes:     int64(s.limit_bytes),
		Hits:           int64(s.hits),
		Misses:         int64(s.misses),
	}, nil
}

// SetCPUCacheLimit keeps at most bytes of idle CPU tensor memory, freeing
// any excess now; 0 turns caching off (every block goes back to malloc).
func SetCPUCacheLimit(bytes int64) error {
	return takeError("cpu_cache_set_limit", C.ddpm_cpu_cache_set_limit(C.int64_t(bytes)))
}

// EmptyCPUCache gives every idle cached block back to the system, like
// torch.cuda.empty_cache for the GPU. It and TrimCPUCache first free what
// the shim derived from weights that have since been closed (bfloat16
// copies, Winograd transforms).
func EmptyCPUCache() error {
	return takeError("cpu_cache_empty", C.ddpm_cpu_cache_empty())
}

// TrimCPUCache gives back the cached blocks that nobody has taken for the
// last idle, and returns their bytes; then it hands malloc's free pages
// back to the system (glibc's malloc_trim). A long-running process that
// varies its shapes, such as a sampling server whose batches change size,
// calls it now and then, so that its resident memory follows what it uses
// now rather than everything it ever used: the blocks of a size in steady
// use that it went on taking stay, the extra ones of a moment when it held
// more of them at once go.
func TrimCPUCache(idle time.Duration) (int64, error) {
	var freed C.int64_t
	err := takeError("cpu_cache_trim", C.ddpm_cpu_cache_trim(C.int64_t(idle.Milliseconds()), &freed))
	return int64(freed), err
}
