// blas.cpp: the BLAS library that libtorch's CPU matrix products (linear
// layers, attention's batched products, the im2col convolutions of
// training) run on: its thread count, and what it says of itself.
#include <ATen/Parallel.h>
#include <dlfcn.h>

#include <cstdlib>
#include <cstring>

#include "shim.h"

namespace {

// OpenBLAS's entry points, looked up at run time (another BLAS lacks them).
template <class F>
F openblas(const char* name) {
  return reinterpret_cast<F>(dlsym(RTLD_DEFAULT, name));
}

// OpenBLAS (Debian's libblas) keeps its own thread pool, sized to the
// machine, apart from libtorch's intra-op threads: with one intra-op thread
// its idle workers still spin on the other cores. The shim keeps the two
// counts equal unless OPENBLAS_NUM_THREADS says otherwise.
void set_blas_threads(int n) {
  if (std::getenv("OPENBLAS_NUM_THREADS") != nullptr) return;
  static auto set = openblas<void (*)(int)>("openblas_set_num_threads");
  if (set != nullptr) set(n);
}

// Set when the library loads, before any matrix product. libtorch's count
// reads OMP_NUM_THREADS, and for a value that is not a positive number it
// prints a warning with a stack dump: that is left to the program, which
// can say so in one line (ddpm refuses it), and OpenBLAS keeps its own count.
const bool threads_set = [] {
  const char* omp = std::getenv("OMP_NUM_THREADS");
  if (omp != nullptr && !(std::atoi(omp) > 0)) return false;
  set_blas_threads(at::get_num_threads());
  return true;
}();

}  // namespace

namespace ddpm {
void apply_blas_threads(int n) { set_blas_threads(n); }
}  // namespace ddpm

extern "C" void ddpm_blas_config(char* buf, size_t cap) {
  if (buf == nullptr || cap == 0) return;
  static auto config = openblas<char* (*)()>("openblas_get_config");
  std::strncpy(buf, config != nullptr ? config() : "", cap - 1);
  buf[cap - 1] = '\0';
}
