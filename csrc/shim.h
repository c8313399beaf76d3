// shim.h: private helpers shared by the shim's translation units. Nothing here
// is part of the C ABI (see ddpm_torch.h for that).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>
#include <c10/core/InferenceMode.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "ddpm_torch.h"

struct ddpm_tensor_s {
  at::Tensor t;
};

struct ddpm_generator_s {
  at::Generator g;
};

namespace ddpm {

// A malloc'd copy of an error message. When there is no memory for the copy
// the error is still an error: the static out-of-memory message, which the
// caller recognises and does not free (NULL would read as success).
inline char* dup_error(const char* msg) {
  size_t n = std::strlen(msg);
  char* out = static_cast<char*>(std::malloc(n + 1));
  if (out == nullptr) return ddpm_out_of_memory_error();
  std::memcpy(out, msg, n + 1);
  return out;
}

// The intra-op thread count asked for through ddpm_set_num_threads (0 =
// libtorch's default).
inline std::atomic<int>& wanted_threads() {
  static std::atomic<int> n{0};
  return n;
}

// OpenMP keeps its thread count per OS thread, and kernels that read it
// directly (oneDNN's convolutions) see the OpenMP default on any thread where
// ATen has not run yet. Go runs shim calls on whichever thread is free, so
// without this the number of threads, and with it the order of floating-point
// sums, would change from call to call. Every call therefore brings its
// thread to the process-wide setting: ATen's per-thread initialisation runs
// (get_num_threads does it), and a count set on another thread is applied.
inline void sync_threads() {
  int have = at::get_num_threads();
  int want = wanted_threads().load(std::memory_order_relaxed);
  if (want > 0 && have != want) at::set_num_threads(want);
}

// A quarter of the memory this process may use: the machine's, or its
// cgroup's (containers) when that is less (csrc/allocator.cpp).
int64_t memory_quarter();

// The size in bytes that the environment variable name gives in MiB, or
// fallback when it is unset or unreadable (read when the library loads,
// where an error could reach no one).
int64_t mb_from_env(const char* name, int64_t fallback);

// Sets OpenBLAS's own thread count (csrc/blas.cpp): the shim keeps it
// equal to the intra-op count.
void apply_blas_threads(int n);

// Sets autocast (mixed precision) for one call and restores the thread's
// previous state; like the grad mode, autocast is per thread in libtorch.
// Cast caching is off: parameters change in place between calls, so a cached
// low-precision copy could be stale.
class AutocastGuard {
 public:
  explicit AutocastGuard(ddpm_mode mode) {
    const bool bf16 = (mode & DDPM_AUTOCAST_BF16) != 0, fp16 = (mode & DDPM_AUTOCAST_FP16) != 0;
    if (!bf16 && !fp16 && !at::autocast::is_enabled() && !at::autocast::is_cpu_enabled()) return;
    active_ = true;
    prev_gpu_ = at::autocast::is_enabled();
    prev_cpu_ = at::autocast::is_cpu_enabled();
    prev_gpu_dtype_ = at::autocast::get_autocast_gpu_dtype();
    prev_cpu_dtype_ = at::autocast::get_autocast_cpu_dtype();
    prev_cache_ = at::autocast::is_autocast_cache_enabled();
    at::autocast::set_autocast_cache_enabled(false);
    at::autocast::set_enabled(bf16 || fp16);
    at::autocast::set_autocast_gpu_dtype(fp16 ? at::kHalf : at::kBFloat16);
    at::autocast::set_cpu_enabled(bf16);  // libtorch's CPU autocast is bfloat16 only
    at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
  }
  ~AutocastGuard() {
    if (!active_) return;
    at::autocast::set_enabled(prev_gpu_);
    at::autocast::set_cpu_enabled(prev_cpu_);
    at::autocast::set_autocast_gpu_dtype(prev_gpu_dtype_);
    at::autocast::set_autocast_cpu_dtype(prev_cpu_dtype_);
    at::autocast::set_autocast_cache_enabled(prev_cache_);
  }
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  bool active_ = false, prev_gpu_ = false, prev_cpu_ = false, prev_cache_ = true;
  at::ScalarType prev_gpu_dtype_ = at::kHalf, prev_cpu_dtype_ = at::kBFloat16;
};

// Whether mode asks for autocast (either flag).
inline bool autocasting(ddpm_mode mode) {
  return (mode & (DDPM_AUTOCAST_BF16 | DDPM_AUTOCAST_FP16)) != 0;
}

// a / b rounded up, for positive b.
inline int64_t divup(int64_t a, int64_t b) { return (a + b - 1) / b; }

// t in float32 when the call autocasts and t holds bfloat16 or float16, else
// t itself: the shim's autocast policy for the ops that must not run in the
// lower precision (GroupNorm, softmax, losses, accumulating reductions). It
// is explicit rather than left to libtorch's autocast lists, which differ
// between devices and versions (1.13's CPU list runs softmax and sums in
// bfloat16, and casts nothing for group_norm).
inline at::Tensor fp32_if_autocast(ddpm_mode mode, const at::Tensor& t) {
  if (!autocasting(mode) || !t.defined()) return t;
  auto st = t.scalar_type();
  return st == at::kBFloat16 || st == at::kHalf ? t.to(at::kFloat) : t;
}

// The forms of a weight that weight_cache.cpp derives and keeps.
enum class WeightForm { kBFloat16, kWinograd, kPointwise, kNarrow, kIm2col };

// Whether w is a float32 CPU weight that needs no gradient here and is not
// an inference tensor (which has no version): one whose derived forms are
// kept.
bool weight_cacheable(const at::Tensor& w);

// derive(w), kept while w lives unchanged, for a weight_cacheable w; an
// undefined tensor, without calling derive, when its bytes (what derive
// makes) would take the cache's forms over their limit.
at::Tensor derived_weight(const at::Tensor& w, WeightForm form, int64_t bytes,
                          at::Tensor (*derive)(const at::Tensor&));

// Frees the derived forms of weights that no longer live.
void sweep_weight_cache();

// w's bfloat16 copy, kept while w lives unchanged (weight_cache.cpp), for a
// weight_cacheable w within the cache's limit; else w itself.
at::Tensor bf16_weight(const at::Tensor& w);

// What the shim's convolution kernels (Winograd, 1x1, narrow, im2col) take in
// common: a CPU with their vectors, no autocast, no gradient for x, a
// float32 channels-last x with channels, a kernel x kernel float32 w whose
// forms the weight cache keeps, with output channels (a multiple of 16 when
// sixteens), one group, stride 1, no dilation, padding pad on each side and
// a bias of w's output channels or none (nn.cpp).
bool vector_conv_takes(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, const int64_t* stride,
                       const int64_t* padding, const int64_t* dilation, int64_t groups, int64_t kernel, int64_t pad,
                       bool sixteens);

// Whether winograd_conv computes conv2d(x, w, bias) with these arguments
// here: see winograd_conv.cpp.
bool winograd_conv_takes(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, const int64_t* stride,
                         const int64_t* padding, const int64_t* dilation, int64_t groups);

// conv2d(x', w, bias) with stride 1 and padding 1 for a 3x3 w, by
// Winograd's F(4x4, 3x3), channels-last (winograd_conv.cpp), where x' is x
// upsampled by up (nearest neighbour; 1: x itself) without being made, plus
// res (undefined, or float32 of the output's shape, channels-last) added to
// it; an undefined tensor when w's transform does not fit in the weight
// cache's limit.
at::Tensor winograd_conv(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, const at::Tensor& res,
                         int64_t up);

// Whether pointwise_conv computes conv2d(x, w, bias) with these arguments
// here: see pointwise_conv.cpp.
bool pointwise_conv_takes(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, const int64_t* stride,
                          const int64_t* padding, const int64_t* dilation, int64_t groups);

// Whether narrow_conv computes conv2d(x, w, bias) with these arguments
// here: see narrow_conv.cpp.
bool narrow_conv_takes(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, const int64_t* stride,
                       const int64_t* padding, const int64_t* dilation, int64_t groups);

// conv2d(x, w, bias) with stride 1 and padding 1 for a 3x3 w into 1 to 8
// channels, channels-last (narrow_conv.cpp); an undefined tensor when w's
// form does not fit in the weight cache's limit.
at::Tensor narrow_conv(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias);

// Whether im2col_conv computes conv2d(x, w, bias) with these arguments
// here: see im2col_conv.cpp.
bool im2col_conv_takes(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, const int64_t* stride,
                       const int64_t* padding, const int64_t* dilation, int64_t groups);

// conv2d(x, w, bias) with stride stride (1 or 2, both axes) and padding 1
// for a 3x3 w into channels in sixteens, as products of gathered patches,
// channels-last (im2col_conv.cpp); an undefined tensor when w's form does
// not fit in the weight cache's limit.
at::Tensor im2col_conv(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, int64_t stride);

// conv2d(x, w, bias) for a 1x1 w with stride 1 and no padding, as one
// matrix product, channels-last (pointwise_conv.cpp), plus res as for
// winograd_conv; an undefined tensor when w's transpose does not fit in the
// weight cache's limit.
at::Tensor pointwise_conv(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, const at::Tensor& res);

// The weight or bias of a convolution or linear layer as the call takes it:
// under bf16 autocast, bf16_weight's copy of a float32 CPU one, else w.
inline at::Tensor bf16_weight_if_autocast(ddpm_mode mode, const at::Tensor& w) {
  return (mode & DDPM_AUTOCAST_BF16) != 0 ? bf16_weight(w) : w;
}

// Sets grad, inference and autocast mode for one shim call and restores the
// calling thread's previous modes on exit, so no mode ever leaks between
// calls.
class ModeGuard {
 public:
  explicit ModeGuard(ddpm_mode mode)
      : inference_((mode & 3) == DDPM_MODE_INFERENCE),
        grad_((mode & 3) == DDPM_MODE_GRAD),
        autocast_(mode) {}

 private:
  c10::InferenceMode inference_;
  at::AutoGradMode grad_;
  AutocastGuard autocast_;
};

inline ddpm_tensor wrap(at::Tensor t) { return new ddpm_tensor_s{std::move(t)}; }

inline const at::Tensor& ref(ddpm_tensor h) {
  TORCH_CHECK(h != nullptr, "null tensor handle");
  return h->t;
}

// An undefined tensor for a NULL handle (optional arguments).
inline at::Tensor optional(ddpm_tensor h) { return h == nullptr ? at::Tensor() : h->t; }

inline at::ScalarType scalar_type(int32_t dtype) {
  switch (dtype) {
    case DDPM_UINT8: return at::kByte;
    case DDPM_INT64: return at::kLong;
    case DDPM_FLOAT16: return at::kHalf;
    case DDPM_FLOAT32: return at::kFloat;
    case DDPM_FLOAT64: return at::kDouble;
    case DDPM_BOOL: return at::kBool;
    case DDPM_BFLOAT16: return at::kBFloat16;
  }
  TORCH_CHECK(false, "unsupported dtype code ", dtype);
}

inline int32_t dtype_code(at::ScalarType st) {
  switch (st) {
    case at::kByte: return DDPM_UINT8;
    case at::kLong: return DDPM_INT64;
    case at::kHalf: return DDPM_FLOAT16;
    case at::kFloat: return DDPM_FLOAT32;
    case at::kDouble: return DDPM_FLOAT64;
    case at::kBool: return DDPM_BOOL;
    case at::kBFloat16: return DDPM_BFLOAT16;
    default: return -static_cast<int32_t>(st) - 1;  // not one of ours
  }
}

inline at::Device device(int32_t type, int32_t index) {
  switch (type) {
    case DDPM_CPU: return at::Device(at::kCPU);
    case DDPM_CUDA: return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(index));
  }
  TORCH_CHECK(false, "unsupported device type code ", type);
}

inline at::TensorOptions options(int32_t dtype, int32_t dev_type, int32_t dev_index) {
  return at::TensorOptions().dtype(scalar_type(dtype)).device(device(dev_type, dev_index));
}

inline at::IntArrayRef dims(const int64_t* p, int64_t n) {
  TORCH_CHECK(n >= 0 && (n == 0 || p != nullptr), "bad dimension list");
  return at::IntArrayRef(p, static_cast<size_t>(n));
}

inline c10::optional<at::Generator> generator(ddpm_generator g) {
  if (g == nullptr) return c10::nullopt;
  return g->g;
}

}  // namespace ddpm

// DDPM_TRY wraps every shim body: the body runs with the call's mode set, and
// any exception becomes the returned error message.
#define DDPM_CATCH                                                   \
  catch (const c10::Error& e) {                                      \
    return ddpm::dup_error(e.what_without_backtrace());              \
  }                                                                  \
  catch (const std::exception& e) {                                  \
    return ddpm::dup_error(e.what());                                \
  }                                                                  \
  catch (...) {                                                      \
    return ddpm::dup_error("unknown C++ exception in libtorch shim"); \
  }

#define DDPM_TRY(mode, ...)            \
  try {                                \
    ddpm::sync_threads();              \
    ddpm::ModeGuard ddpm_mode_guard_(mode); \
    __VA_ARGS__;                       \
    return nullptr;                    \
  }                                    \
  DDPM_CATCH

// For calls that depend on no mode.
#define DDPM_TRY_PLAIN(...) \
  try {                     \
    ddpm::sync_threads();   \
    __VA_ARGS__;            \
    return nullptr;         \
  }                         \
  DDPM_CATCH
