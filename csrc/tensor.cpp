// tensor.cpp: library queries, tensor lifetime, host data, creation, random
// numbers, conversion and autograd.
#include <ATen/Config.h>
#include <ATen/Parallel.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <torch/version.h>

#include <mutex>

#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#endif

#include "shim.h"

using ddpm::ref;
using ddpm::wrap;

namespace {
char out_of_memory_message[] = "out of memory (the shim could not allocate the error message)";
}  // namespace

extern "C" {

ddpm_error ddpm_out_of_memory_error(void) { return out_of_memory_message; }

void ddpm_version(char* buf, size_t cap) {
  if (buf == nullptr || cap == 0) return;
  std::snprintf(buf, cap, "%s", TORCH_VERSION);
}

int64_t ddpm_cuda_device_count(void) {
  try {
    return at::detail::getCUDAHooks().getNumGPUs();
  } catch (...) {
    return 0;
  }
}

int32_t ddpm_cuda_available(void) {
  try {
    return at::hasCUDA() && at::detail::getCUDAHooks().getNumGPUs() > 0 ? 1 : 0;
  } catch (...) {
    return 0;
  }
}

int32_t ddpm_cpu_has_bf16(void) {
#if defined(__x86_64__) && defined(__GNUC__)
  // __builtin_cpu_supports also checks that the OS saves the registers.
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512bf16") || __builtin_cpu_supports("amx-bf16") ? 1 : 0;
#elif defined(__aarch64__) && defined(__linux__)
  const unsigned long hwcap2_bf16 = 1UL << 14;  // HWCAP2_BF16 in <asm/hwcap.h>
  return (getauxval(AT_HWCAP2) & hwcap2_bf16) != 0 ? 1 : 0;
#else
  return 0;
#endif
}

ddpm_error ddpm_set_num_threads(int32_t n) {
  DDPM_TRY_PLAIN(TORCH_CHECK(n >= 1, "thread count must be at least 1, got ", n);
                 ddpm::wanted_threads().store(n); at::set_num_threads(n);
                 ddpm::apply_blas_threads(n));
}

int32_t ddpm_get_num_threads(void) {
  ddpm::sync_threads();
  return at::get_num_threads();
}

void ddpm_tensor_free(ddpm_tensor t) { delete t; }

ddpm_error ddpm_tensor_meta(ddpm_tensor h, ddpm_meta* out) {
  DDPM_TRY_PLAIN({
    const at::Tensor& t = ref(h);
    TORCH_CHECK(t.defined(), "undefined tensor");
    TORCH_CHECK(t.dim() <= DDPM_MAX_DIMS, "tensor has ", t.dim(), " dims, more than ",
                DDPM_MAX_DIMS);
    ddpm_meta m{};
    m.ndim = t.dim();
    for (int64_t i = 0; i < m.ndim; i++) m.shape[i] = t.size(i);
    m.dtype = ddpm::dtype_code(t.scalar_type());
    m.device_type = t.device().is_cuda() ? DDPM_CUDA : DDPM_CPU;
    m.device_index = t.device().has_index() ? t.device().index() : -1;
    m.requires_grad = t.requires_grad();
    m.is_leaf = t.is_leaf();
    m.is_contiguous = t.is_contiguous();
    *out = m;
  });
}

ddpm_error ddpm_from_data(const void* data, int64_t nbytes, int32_t dtype, const int64_t* shape,
                          int64_t ndim, int32_t device_type, int32_t device_index,
                          ddpm_tensor* out) {
  DDPM_TRY(DDPM_MODE_NO_GRAD, {
    at::Tensor t = at::empty(ddpm::dims(shape, ndim), at::TensorOptions().dtype(ddpm::scalar_type(dtype)));
    int64_t want = t.numel() * static_cast<int64_t>(t.element_size());
    TORCH_CHECK(nbytes == want, "data has ", nbytes, " bytes, shape and dtype need ", want);
    if (want > 0) std::memcpy(t.data_ptr(), data, static_cast<size_t>(want));
    *out = wrap(t.to(ddpm::device(device_type, device_index)));
  });
}

ddpm_error ddpm_copy_to_host(ddpm_tensor h, void* dst, int64_t nbytes) {
  DDPM_TRY(DDPM_MODE_NO_GRAD, {
    at::Tensor t = ref(h).detach().to(at::kCPU).contiguous();
    int64_t want = t.numel() * static_cast<int64_t>(t.element_size());
    TORCH_CHECK(nbytes == want, "buffer has ", nbytes, " bytes, tensor has ", want);
    if (want > 0) std::memcpy(dst, t.data_ptr(), static_cast<size_t>(want));
  });
}

ddpm_error ddpm_item(ddpm_tensor h, double* out) {
  DDPM_TRY(DDPM_MODE_NO_GRAD, *out = ref(h).item<double>());
}

ddpm_error ddpm_full(ddpm_mode mode, const int64_t* shape, int64_t ndim, double value,
                     int32_t dtype, int32_t device_type, int32_t device_index, ddpm_tensor* out) {
  DDPM_TRY(mode, *out = wrap(at::full(ddpm::dims(shape, ndim), value,
                                      ddpm::options(dtype, device_type, device_index))));
}

ddpm_error ddpm_arange(ddpm_mode mode, int64_t n, int32_t dtype, int32_t device_type,
                       int32_t device_index, ddpm_tensor* out) {
  DDPM_TRY(mode, *out = wrap(at::arange(n, ddpm::options(dtype, device_type, device_index))));
}

ddpm_error ddpm_generator_new(uint64_t seed, int32_t device_type, int32_t device_index,
                              ddpm_generator* out) {
  DDPM_TRY_PLAIN({
    at::Device dev = ddpm::device(device_type, device_index);
    if (dev.is_cuda()) {
      TORCH_CHECK(at::hasCUDA(), "CUDA is not available in this libtorch build");
      if (!dev.has_index()) dev = at::Device(at::kCUDA, 0);
    }
    at::Generator g = at::globalContext().defaultGenerator(dev).clone();
    // libtorch before 2.x hands out a clone whose weak count is 0 where a
    // live object's is 1, so dropping its last reference never frees it
    // (2.6 KiB per CPU generator, one per served request). Repair the
    // count; a libtorch that counts right is left alone.
    if (g.getIntrusivePtr().weak_use_count() == 0) {
      c10::raw::weak_intrusive_ptr::incref(g.unsafeGetGeneratorImpl());
    }
    {
      std::lock_guard<std::mutex> lock(g.mutex());
      g.set_current_seed(seed);
    }
    *out = new ddpm_generator_s{std::move(g)};
  });
}

void ddpm_generator_free(ddpm_generator g) { delete g; }

ddpm_error ddpm_generator_get_state(ddpm_generator g, ddpm_tensor* out) {
  DDPM_TRY(DDPM_MODE_NO_GRAD, {
    TORCH_CHECK(g != nullptr, "null generator handle");
    std::lock_guard<std::mutex> lock(g->g.mutex());
    *out = wrap(g->g.get_state());
  });
}

ddpm_error ddpm_generator_set_state(ddpm_generator g, ddpm_tensor state) {
  DDPM_TRY(DDPM_MODE_NO_GRAD, {
    TORCH_CHECK(g != nullptr, "null generator handle");
    std::lock_guard<std::mutex> lock(g->g.mutex());
    g->g.set_state(ref(state));
  });
}

ddpm_error ddpm_rand(ddpm_mode mode, int32_t kind, const int64_t* shape, int64_t ndim,
                     int32_t dtype, int32_t device_type, int32_t device_index, ddpm_generator g,
                     ddpm_tensor* out) {
  DDPM_TRY(mode, {
    auto opts = ddpm::options(dtype, device_type, device_index);
    auto gen = ddpm::generator(g);
    switch (kind) {
      case DDPM_RAND_NORMAL: *out = wrap(at::randn(ddpm::dims(shape, ndim), gen, opts)); break;
      case DDPM_RAND_UNIFORM: *out = wrap(at::rand(ddpm::dims(shape, ndim), gen, opts)); break;
      default: TORCH_CHECK(false, "unknown random kind ", kind);
    }
  });
}

ddpm_error ddpm_randint(ddpm_mode mode, int64_t low, int64_t high, const int64_t* shape,
                        int64_t ndim, int32_t device_type, int32_t device_index, ddpm_generator g,
                        ddpm_tensor* out) {
  DDPM_TRY(mode, *out = wrap(at::randint(low, high, ddpm::dims(shape, ndim), ddpm::generator(g),
                                         ddpm::options(DDPM_INT64, device_type, device_index))));
}

ddpm_error ddpm_bernoulli(ddpm_mode mode, ddpm_tensor p, ddpm_generator g, ddpm_tensor* out) {
  DDPM_TRY(mode, *out = wrap(at::bernoulli(ref(p), ddpm::generator(g))));
}

ddpm_error ddpm_to(ddpm_mode mode, ddpm_tensor a, int32_t dtype, int32_t device_type,
                   int32_t device_index, ddpm_tensor* out) {
  DDPM_TRY(mode, {
    const at::Tensor& t = ref(a);
    at::ScalarType st = dtype < 0 ? t.scalar_type() : ddpm::scalar_type(dtype);
    *out = wrap(t.to(ddpm::device(device_type, device_index), st));
  });
}

ddpm_error ddpm_clone(ddpm_mode mode, ddpm_tensor a, ddpm_tensor* out) {
  DDPM_TRY(mode, *out = wrap(ref(a).clone()));
}

ddpm_error ddpm_detach(ddpm_tensor a, ddpm_tensor* out) {
  DDPM_TRY_PLAIN(*out = wrap(ref(a).detach()));
}

ddpm_error ddpm_set_requires_grad(ddpm_tensor a, int32_t requires_grad) {
  DDPM_TRY_PLAIN(ref(a).requires_grad_(requires_grad != 0));
}

ddpm_error ddpm_backward(ddpm_tensor t, ddpm_tensor grad, int32_t retain_graph) {
  DDPM_TRY(DDPM_MODE_GRAD, ref(t).backward(ddpm::optional(grad), retain_graph != 0));
}

ddpm_error ddpm_grad(ddpm_tensor t, ddpm_tensor* out, int32_t* defined) {
  DDPM_TRY_PLAIN({
    const at::Tensor& g = ref(t).grad();
    *defined = g.defined() ? 1 : 0;
    if (g.defined()) *out = wrap(g);
  });
}

ddpm_error ddpm_zero_grad(ddpm_tensor t) {
  DDPM_TRY_PLAIN({
    TORCH_CHECK(t != nullptr, "null tensor handle");
    t->t.mutable_grad().reset();
  });
}

}  // extern "C"
