// lanes.h: vectors of L floats (GCC's vector extensions) for the shim's
// hand-vectorised CPU kernels (winograd_conv.cpp, pointwise_conv.cpp,
// narrow_conv.cpp). A kernel is written once as a template over L and
// compiled for AVX-512 (L = 16) and AVX2 (L = 8) in functions with those
// targets, chosen at run time by vector_isa(); each lane computes what the
// lanes of the other width compute, so the two give the same bits.
#pragma once

#include <cstdint>

#include "ddpm_torch.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11
#define DDPM_LANES 1
#else
#define DDPM_LANES 0
#endif

namespace ddpm {

// The vectors the kernels use: the widest this CPU has, at most the limit
// ddpm_vector_isa sets (lanes.cpp); DDPM_VECTORS_NONE where they do not run.
int vector_isa();

}  // namespace ddpm

#if DDPM_LANES

#define DDPM_INLINE inline __attribute__((always_inline))
// Vectors pass only between inlined functions, so their ABI does not matter
// (GCC warns about it at the end of each file, hence no pop).
#pragma GCC diagnostic ignored "-Wpsabi"

namespace ddpm {

template <int L>
struct Lanes {
  typedef float vec __attribute__((vector_size(4 * L)));
  typedef float vec_u __attribute__((vector_size(4 * L), aligned(4)));  // the same, unaligned in memory
  typedef int32_t ivec __attribute__((vector_size(4 * L)));
  static DDPM_INLINE vec load(const float* p) { return *reinterpret_cast<const vec_u*>(p); }
  static DDPM_INLINE void store(float* p, vec v) { *reinterpret_cast<vec_u*>(p) = v; }
};

}  // namespace ddpm

#endif  // DDPM_LANES
