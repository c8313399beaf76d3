// lanes.cpp: which vectors the hand-vectorised kernels use (lanes.h).
#include <algorithm>
#include <atomic>

#include "lanes.h"

namespace {

// The widest vectors the kernels may use (ddpm_vector_isa).
std::atomic<int> isa_limit{DDPM_VECTORS_AVX512};

#if DDPM_LANES
int cpu_isa() {
  // The levels the kernels are compiled for (target("arch=x86-64-v4") and
  // v3), not just their vectors: the compiler also uses the level's other
  // instructions (BMI2's shlx, say), which a virtual machine may hide.
  static const int isa = __builtin_cpu_supports("x86-64-v4")   ? DDPM_VECTORS_AVX512
                         : __builtin_cpu_supports("x86-64-v3") ? DDPM_VECTORS_AVX2
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
