// lanes.cpp: which vectors the hand-vectorised kernels use (lanes.h).
#include <algorithm>
#include <atomic>

#include "lanes.h"

namespace {

// The widest vectors the kernels may use (ddpm_vector_isa).
std::atomic<int> isa_limit{DDPM_VECTORS_AVX512};

#if DDPM_LANES
int cpu_isa() {
  static const int isa = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                                 __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
                                 __builtin_cpu_supports("avx512cd")
                             ? DDPM_VECTORS_AVX512
                         : __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? DDPM_VECTORS_AVX2
                                                                                            : DDPM_VECTORS_NONE;
  return isa;
}
#endif

}  // namespace

namespace ddpm {

int vector_isa() {
#if DDPM_LANES
  return std::min(cpu_isa(), isa_limit.load());
#else
  return DDPM_VECTORS_NONE;
#endif
}

}  // namespace ddpm

extern "C" int32_t ddpm_vector_isa(int32_t limit) {
  if (limit >= 0) isa_limit.store(limit);
  return ddpm::vector_isa();
}
