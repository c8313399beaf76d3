package torch

// #include "ddpm_torch.h"
import "C"

// WeightCacheStats describes the forms the shim derives from float32 CPU
// weights and keeps while the weights live unchanged, for calls without
// autograd: a bfloat16 copy of a convolution's or linear layer's weights
// under bf16 autocast (half their memory), a Winograd transform of a 3x3
// convolution's weight (four times its memory; see Conv2d).
//
// The forms are held to LimitBytes: a quarter of the machine's (or the
// cgroup's) memory, unless the environment variable DDPM_WEIGHT_CACHE_MB
// set another figure when the library loaded, or SetWeightCacheLimit did
// since. A form that would pass it, once the forms of weights that no
// longer live are dropped, is not made: its call runs as it would without
// the cache (libtorch's convolution, autocast's cast at every call), so the
// weights that came first keep theirs. A Stable-Diffusion-sized
// autoencoder's decoder takes about 0.8 GB of Winograd transforms.
type WeightCacheStats struct {
	Bytes      int64 // held by the forms (and those being made)
	Forms      int64 // forms kept
	LimitBytes int64 // the most they may hold
}

// WeightCache returns the weight cache's current figures.
func WeightCache() (WeightCacheStats, error) {
	var s C.ddpm_weight_forms
	if err := takeError("weight_cache_stats", C.ddpm_weight_cache_stats(&s)); err != nil {
		return WeightCacheStats{}, err
	}
	return WeightCacheStats{Bytes: int64(s.bytes), Forms: int64(s.forms), LimitBytes: int64(s.limit_bytes)}, nil
}

// SetWeightCacheLimit holds the weight cache's forms to at most bytes (0
// keeps none), dropping the forms of closed weights and then others until
// they fit.
func SetWeightCacheLimit(bytes int64) error {
	return takeError("weight_cache_set_limit", C.ddpm_weight_cache_set_limit(C.int64_t(bytes)))
}
