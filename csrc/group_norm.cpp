// group_norm.cpp: GroupNorm, optionally after a per-channel shift and
// followed by SiLU, the way the U-Net's and the autoencoder's residual
// blocks use it: SiLU(GroupNorm(x + shift)).
//
// Without autograd on the CPU in float32 the shim runs its own kernel: two
// reading passes for each group's mean and centred variance and one that
// writes the normalised, shifted and activated value, a sample at a time
// while its map is in the cache, where libtorch 1.13 takes a pass for the
// add, two or three for GroupNorm (its channels-last kernel walks each
// group's channels apart) and two for SiLU, each spread over the threads on
// its own. BenchmarkGroupNormSiLU (package torch), the small preset's
// channels-last maps with a shift, two runs: 0.54-0.62 / 0.36-0.39 /
// 0.35-0.39 of libtorch's time at 8 x 32 x 32 x 32 / 8 x 64 x 16 x 16 /
// 8 x 64 x 8 x 8 on one thread (a serving worker's forward), 0.20-0.22 /
// 0.15-0.18 at batch 1 on two threads (one request's); at batch 64 on two
// threads, where both are bound by SiLU's exponentials, about the same. In
// the small preset's whole forward (BenchmarkGroupNormKernel, package unet):
// 0.87-0.93 of the time at batch 8 on one thread, 0.79-0.85 at batch 1 on
// two, 0.89-1.19 at batch 64 on two; in bf16, reading and writing bfloat16
// (see ddpm_group_norm), 0.78-0.90 at batch 8, 0.86 at batch 1. torch's
// SetGroupNormKernel(false) turns the kernel off. Each sample's statistics
// are summed in a fixed order of 256-pixel chunks (float within a chunk,
// double across), so a sample's values depend neither on the batch around
// it nor on the thread count. With autograd, on other devices and in other
// dtypes libtorch's ops run: the kernel with a backward of its own (a pass
// for the gradient at the normalised value and its sums, one for dx) left
// the small preset's training step at batch 64 (NCHW, two threads) at
// 0.96-1.08 of the time in float32 and 0.99-1.06 in bf16, libtorch's ops
// taking turns with it, so it was not kept.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include "shim.h"

using ddpm::divup;
using ddpm::ref;
using ddpm::wrap;

// The vectorised loops below are compiled for AVX-512, AVX2 and the x86-64
// baseline, picked at load time by the CPU (function multiversioning of GCC
// 11 and later, which knows these levels); elsewhere they are compiled once
// for the target.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11
#define DDPM_VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define DDPM_VECTOR_CLONES
#endif

namespace {

constexpr int64_t kChunk = 256;  // pixels (channels-last) or values (NCHW) summed in float
// The fewest values a thread takes in a parallel pass: a smaller share costs
// more in waking the threads than it saves (with every pass of this kernel
// and the Winograd kernel spread, the small preset's forward at batch 1 on
// two threads took 1.1-1.5x the time).
constexpr int64_t kThreadValues = 1 << 16;

constexpr int kLanes = 16;       // partial sums of an NCHW plane, one per vector lane

// e^x in float without branches or libm calls, so that the loops calling it
// vectorise: x = n ln 2 + r with |r| <= ln 2 / 2, e^r by the degree-7
// polynomial of the Cephes library's expf (relative error about 1e-7),
// 2^n from the exponent bits. x is clamped to [-87, 88], where e^x is a
// normal float; NaN stays NaN.
inline float exp_float(float x) {
  x = x < -87.f ? -87.f : (x > 88.f ? 88.f : x);
  const float n = (x * 1.44269504088896341f + 12582912.f) - 12582912.f;  // round to nearest
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

// silu(v) = v sigmoid(v).
inline float silu_float(float v) { return v / (1.f + exp_float(-v)); }

// The kernel's element types: float32, and bfloat16 held as its bits.
inline float load(float v) { return v; }
inline float load(uint16_t v) {
  const uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
inline void store(float* p, float v) { *p = v; }
// Round to nearest even, NaN to the quiet NaN, as c10::BFloat16 rounds.
inline void store(uint16_t* p, float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  const uint32_t rounded = bits + 0x7FFFu + ((bits >> 16) & 1u);
  // All ones for NaN (its magnitude above infinity's), by an arithmetic shift.
  const uint32_t nan = static_cast<uint32_t>((0x7F800000 - static_cast<int32_t>(bits & 0x7FFFFFFFu)) >> 31);
  *p = static_cast<uint16_t>((rounded ^ ((rounded ^ 0x7FC00000u) & nan)) >> 16);  // branch-free: vectorises
}

// acc[c] = the sum over the pixels of d = x[p, c] - center[c], or of d^2
// when squares, for channels-last pixels of C channels.
template <typename T>
inline void pixel_sums_impl(const T* __restrict x, int64_t pixels, int64_t C, const float* __restrict center,
                            bool squares, float* __restrict acc) {
  for (int64_t c = 0; c < C; c++) acc[c] = 0.f;
  if (squares) {
    for (int64_t p = 0; p < pixels; p++)
      for (int64_t c = 0; c < C; c++) {
        const float d = load(x[p * C + c]) - center[c];
        acc[c] += d * d;
      }
  } else {
    for (int64_t p = 0; p < pixels; p++)
      for (int64_t c = 0; c < C; c++) acc[c] += load(x[p * C + c]) - center[c];
  }
}

// The sum of d = x[i] - center, or of d^2 when squares, over n contiguous
// values, in kLanes partial sums added in a fixed order.
template <typename T>
inline float plane_sum_impl(const T* __restrict x, int64_t n, float center, bool squares) {
  float lanes[kLanes] = {};
  const int64_t whole = n / kLanes * kLanes;
  if (squares) {
    for (int64_t i = 0; i < whole; i += kLanes)
      for (int j = 0; j < kLanes; j++) {
        const float d = load(x[i + j]) - center;
        lanes[j] += d * d;
      }
  } else {
    for (int64_t i = 0; i < whole; i += kLanes)
      for (int j = 0; j < kLanes; j++) lanes[j] += load(x[i + j]) - center;
  }
  float sum = 0.f;
  for (int j = 0; j < kLanes; j++) sum += lanes[j];
  for (int64_t i = whole; i < n; i++) {
    const float d = load(x[i]) - center;
    sum += squares ? d * d : d;
  }
  return sum;
}

// y[p, c] = act((x[p, c] - center[c]) scale[c] + bias[c]) for channels-last
// pixels.
template <typename T>
inline void pixel_apply_impl(const T* __restrict x, T* __restrict y, int64_t pixels, int64_t C,
                             const float* __restrict center, const float* __restrict scale,
                             const float* __restrict bias, bool silu) {
  if (C % kLanes == 0) {
    // A vector of channels at a time, its constants held in registers: no
    // remainder loop for each pixel.
    for (int64_t c0 = 0; c0 < C; c0 += kLanes) {
      float m[kLanes], a[kLanes], b[kLanes];
      for (int j = 0; j < kLanes; j++) m[j] = center[c0 + j], a[j] = scale[c0 + j], b[j] = bias[c0 + j];
      if (silu) {
        for (int64_t p = 0; p < pixels; p++)
          for (int j = 0; j < kLanes; j++)
            store(&y[p * C + c0 + j], silu_float((load(x[p * C + c0 + j]) - m[j]) * a[j] + b[j]));
      } else {
        for (int64_t p = 0; p < pixels; p++)
          for (int j = 0; j < kLanes; j++) store(&y[p * C + c0 + j], (load(x[p * C + c0 + j]) - m[j]) * a[j] + b[j]);
      }
    }
    return;
  }
  for (int64_t p = 0; p < pixels; p++) {
    const T* xp = x + p * C;
    T* yp = y + p * C;
    if (silu) {
      for (int64_t c = 0; c < C; c++) store(&yp[c], silu_float((load(xp[c]) - center[c]) * scale[c] + bias[c]));
    } else {
      for (int64_t c = 0; c < C; c++) store(&yp[c], (load(xp[c]) - center[c]) * scale[c] + bias[c]);
    }
  }
}

// y[i] = act((x[i] - center) scale + bias) over n contiguous values.
template <typename T>
inline void plane_apply_impl(const T* __restrict x, T* __restrict y, int64_t n, float center, float scale,
                             float bias, bool silu) {
  if (silu) {
    for (int64_t i = 0; i < n; i++) store(&y[i], silu_float((load(x[i]) - center) * scale + bias));
  } else {
    for (int64_t i = 0; i < n; i++) store(&y[i], (load(x[i]) - center) * scale + bias);
  }
}

// The loops above for float32 and for bfloat16 maps, each compiled for the
// CPU levels of DDPM_VECTOR_CLONES.
#define DDPM_GROUP_NORM_LOOPS(T)                                                                                 \
  DDPM_VECTOR_CLONES void pixel_sums(const T* x, int64_t pixels, int64_t C, const float* center, bool squares,   \
                                     float* acc) {                                                               \
    pixel_sums_impl(x, pixels, C, center, squares, acc);                                                         \
  }                                                                                                              \
  DDPM_VECTOR_CLONES float plane_sum(const T* x, int64_t n, float center, bool squares) {                        \
    return plane_sum_impl(x, n, center, squares);                                                                \
  }                                                                                                              \
  DDPM_VECTOR_CLONES void plane_apply(const T* x, T* y, int64_t n, float center, float scale, float bias,        \
                                      bool silu) {                                                               \
    plane_apply_impl(x, y, n, center, scale, bias, silu);                                                        \
  }
DDPM_GROUP_NORM_LOOPS(float)
DDPM_GROUP_NORM_LOOPS(uint16_t)
#undef DDPM_GROUP_NORM_LOOPS

DDPM_VECTOR_CLONES
void pixel_apply(const float* x, float* y, int64_t pixels, int64_t C, const float* center, const float* scale,
                 const float* bias, bool silu) {
  pixel_apply_impl(x, y, pixels, C, center, scale, bias, silu);
}

// bfloat16 pixels through float32 rows, 32 pixels at a time: GCC does not
// vectorise the SiLU with the rounding store in one loop over pixels, and a
// pixel at a time the conversions' and the channels' loops were too short:
// 32 at a time took 0.57-0.84 of the time on the small preset's maps
// (BenchmarkGroupNormSiLU's kernel-bf16, the two builds taking turns, two
// runs), about the float32 kernel's time.
DDPM_VECTOR_CLONES
void pixel_apply(const uint16_t* x, uint16_t* y, int64_t pixels, int64_t C, const float* center, const float* scale,
                 const float* bias, bool silu) {
  constexpr int64_t kBlock = 32;
  std::vector<float> in(static_cast<size_t>(kBlock * C)), out(static_cast<size_t>(kBlock * C));
  for (int64_t p0 = 0; p0 < pixels; p0 += kBlock) {
    const int64_t n = std::min(kBlock, pixels - p0) * C;
    for (int64_t i = 0; i < n; i++) in[i] = load(x[p0 * C + i]);
    pixel_apply_impl(in.data(), out.data(), n / C, C, center, scale, bias, silu);
    for (int64_t i = 0; i < n; i++) store(&y[p0 * C + i], out[i]);
  }
}

// The elements of a float32 or bfloat16 tensor as the loops take them.
template <typename T>
T* elements(const at::Tensor& t);
template <>
float* elements<float>(const at::Tensor& t) {
  return t.data_ptr<float>();
}
template <>
uint16_t* elements<uint16_t>(const at::Tensor& t) {
  return reinterpret_cast<uint16_t*>(t.data_ptr<at::BFloat16>());
}

// The shim's kernel: x float32 or bfloat16 (T: float or uint16_t), the
// output of x's dtype, contiguous (NCHW, any number of spatial dims) or
// channels-last (4-D); shift (N, C) or undefined; weight and bias (C,
// float32) or undefined; everything computed in float32. Sums in float lose
// the low bits of a mean far from zero, so the first pass sums x less its
// first value in each sample's channel (a pivot), the second the squares of
// x less the mean, and the output is computed from x less the mean too: the
// rounding scales with the spread of the values, not with their size.
template <typename T>
at::Tensor fused_group_norm(const at::Tensor& x, const at::Tensor& shift, int64_t groups, const at::Tensor& weight,
                            const at::Tensor& bias, double eps, bool silu, bool channels_last) {
  // Named for libtorch's profiler (ddpm bench --profile), like an operator.
  RECORD_FUNCTION(silu ? "ddpm::group_norm_silu" : "ddpm::group_norm", std::vector<c10::IValue>());
  const int64_t N = x.size(0), C = x.size(1), P = x.numel() / (N * C), D = C / groups;
  const int64_t chunks = divup(P, kChunk);
  at::Tensor y = at::empty_strided(x.sizes(), x.strides(), x.options());
  const T* xd = elements<T>(x);
  T* yd = elements<T>(y);
  const at::Tensor sh = shift.defined() ? shift.contiguous() : shift;
  const at::Tensor w = weight.defined() ? weight.contiguous() : weight;
  const at::Tensor b = bias.defined() ? bias.contiguous() : bias;
  const float* shd = sh.defined() ? sh.data_ptr<float>() : nullptr;
  const float* wd = w.defined() ? w.data_ptr<float>() : nullptr;
  const float* bd = b.defined() ? b.data_ptr<float>() : nullptr;
  // x's value of sample n, channel c, pixel 0.
  auto first = [&](int64_t n, int64_t c) { return load(channels_last ? xd[n * P * C + c] : xd[(n * C + c) * P]); };

  // center[n C + c]: what the pass subtracts from x of sample n, channel c:
  // the pivot, then the group mean of x + shift less shift[n, c].
  std::vector<float> center(static_cast<size_t>(N * C));
  for (int64_t n = 0; n < N; n++)
    for (int64_t c = 0; c < C; c++) center[n * C + c] = first(n, c);
  // part[(n C + c) chunks + k]: chunk k's float sum for sample n, channel c.
  std::vector<float> part(static_cast<size_t>(N * C * chunks));
  // scale[n C + c], offset[c]: y = (x - center) scale + offset.
  std::vector<float> scale(static_cast<size_t>(N * C)), offset(static_cast<size_t>(C));
  for (int64_t c = 0; c < C; c++) offset[c] = bd != nullptr ? bd[c] : 0.f;
  // The sum of channel c's chunks in double, divided by its count.
  auto channel_mean = [&](int64_t n, int64_t c) {
    double s = 0;
    for (int64_t k = 0; k < chunks; k++) s += part[(n * C + c) * chunks + k];
    return s / static_cast<double>(P);
  };
  // The three passes over samples [n0, n1), each split into chunks run in
  // parallel (in line when called from a parallel region).
  auto normalize = [&](int64_t n0, int64_t n1) {
    auto sums = [&](bool squares) {
      if (channels_last) {
        at::parallel_for(n0 * chunks, n1 * chunks, divup(kThreadValues, kChunk * C), [&](int64_t u0, int64_t u1) {
          std::vector<float> acc(static_cast<size_t>(C));
          for (int64_t u = u0; u < u1; u++) {
            const int64_t n = u / chunks, k = u % chunks, p0 = k * kChunk, p1 = std::min(P, p0 + kChunk);
            pixel_sums(xd + (n * P + p0) * C, p1 - p0, C, center.data() + n * C, squares, acc.data());
            for (int64_t c = 0; c < C; c++) part[(n * C + c) * chunks + k] = acc[c];
          }
        });
      } else {
        at::parallel_for(n0 * C * chunks, n1 * C * chunks, divup(kThreadValues, kChunk), [&](int64_t u0, int64_t u1) {
          for (int64_t u = u0; u < u1; u++) {
            const int64_t nc = u / chunks, k = u % chunks, i0 = k * kChunk, i1 = std::min(P, i0 + kChunk);
            part[u] = plane_sum(xd + nc * P + i0, i1 - i0, center[nc], squares);
          }
        });
      }
    };
    sums(false);
    for (int64_t n = n0; n < n1; n++)
      for (int64_t g = 0; g < groups; g++) {
        double m = 0;
        for (int64_t c = g * D; c < (g + 1) * D; c++)
          m += center[n * C + c] + channel_mean(n, c) + (shd != nullptr ? shd[n * C + c] : 0.0);
        m /= static_cast<double>(D);
        for (int64_t c = g * D; c < (g + 1) * D; c++)
          center[n * C + c] = static_cast<float>(m - (shd != nullptr ? shd[n * C + c] : 0.0));
      }
    sums(true);
    for (int64_t n = n0; n < n1; n++)
      for (int64_t g = 0; g < groups; g++) {
        double var = 0;
        for (int64_t c = g * D; c < (g + 1) * D; c++) var += channel_mean(n, c);
        const double rstd = 1.0 / std::sqrt(var / static_cast<double>(D) + eps);
        for (int64_t c = g * D; c < (g + 1) * D; c++)
          scale[n * C + c] = static_cast<float>(rstd * (wd != nullptr ? wd[c] : 1.0));
      }
    if (channels_last) {
      at::parallel_for(n0 * chunks, n1 * chunks, divup(kThreadValues, kChunk * C), [&](int64_t u0, int64_t u1) {
        for (int64_t u = u0; u < u1; u++) {
          const int64_t n = u / chunks, p0 = u % chunks * kChunk, p1 = std::min(P, p0 + kChunk);
          pixel_apply(xd + (n * P + p0) * C, yd + (n * P + p0) * C, p1 - p0, C, center.data() + n * C,
                      scale.data() + n * C, offset.data(), silu);
        }
      });
    } else {
      at::parallel_for(n0 * C, n1 * C, divup(kThreadValues, P), [&](int64_t u0, int64_t u1) {
        for (int64_t nc = u0; nc < u1; nc++)
          plane_apply(xd + nc * P, yd + nc * P, P, center[nc], scale[nc], offset[nc % C], silu);
      });
    }
  };
  // A sample at a time while its map is in the cache, the samples spread
  // over the threads; a batch smaller than the thread count spreads each
  // pass's chunks instead (each share at least kThreadValues values).
  if (N >= at::get_num_threads()) {
    at::parallel_for(0, N, divup(kThreadValues, C * P), [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; n++) normalize(n, n + 1);
    });
  } else {
    normalize(0, N);
  }
  return y;
}

// Whether the shim's kernel takes x (float32, or bfloat16 when bf16): see
// the file comment; x's shapes and groups are checked before. The layout it
// reads x in is set in channels_last.
bool fused_group_norm_takes(const at::Tensor& x, const at::Tensor& shift, const at::Tensor& weight,
                            const at::Tensor& bias, bool bf16, bool* channels_last) {
  auto float_cpu = [](const at::Tensor& t) {
    return !t.defined() || (t.device().is_cpu() && t.scalar_type() == at::kFloat);
  };
  const at::ScalarType dt = bf16 ? at::kBFloat16 : at::kFloat;
  if (!x.device().is_cpu() || x.scalar_type() != dt || x.dim() < 3 || x.numel() == 0) return false;
  if (weight.defined() && weight.numel() != x.size(1)) return false;
  if (bias.defined() && bias.numel() != x.size(1)) return false;
  if (!float_cpu(shift) || !float_cpu(weight) || !float_cpu(bias)) return false;
  if (at::GradMode::is_enabled() &&
      (x.requires_grad() || (shift.defined() && shift.requires_grad()) ||
       (weight.defined() && weight.requires_grad()) || (bias.defined() && bias.requires_grad())))
    return false;
  if (x.is_contiguous()) {
    *channels_last = false;
    return true;
  }
  *channels_last = x.dim() == 4 && x.is_contiguous(at::MemoryFormat::ChannelsLast);
  return *channels_last;
}

// Whether libtorch's GroupNorm of x should run on an NCHW copy of a
// channels-last x. libtorch 1.13's CPU kernel for channels-last maps smaller
// than 32x32 walks every pixel of every group separately; with fewer than 8
// channels per group that is 10-30 times slower than its NCHW kernel, and
// slower than copying there and back (measured, two threads: 64 maps of 64
// channels at 16x16 in 32 groups took 9.2 ms channels-last, 0.35 ms NCHW,
// 1.2 ms with the two copies; with 8 channels per group 0.29 ms
// channels-last against 0.91 ms with the copies). It matters under autograd
// now (an autoencoder with diffusers' 32 groups, trained channels-last).
bool group_norm_via_nchw(const at::Tensor& x, int64_t groups) {
  if (!x.device().is_cpu() || x.dim() != 4 || groups <= 0) return false;
  if (x.suggest_memory_format() != at::MemoryFormat::ChannelsLast) return false;
  return x.size(2) * x.size(3) < 1024 && x.size(1) / groups < 8;
}

// libtorch's ops: the shift's add, GroupNorm, SiLU.
at::Tensor aten_group_norm(const at::Tensor& x, const at::Tensor& shift, int64_t groups, const at::Tensor& w,
                           const at::Tensor& b, double eps, bool silu) {
  at::Tensor in = x;
  if (shift.defined()) {
    std::vector<int64_t> view{x.size(0), x.size(1)};
    view.resize(static_cast<size_t>(x.dim()), 1);
    in = x + shift.view(view);
  }
  at::Tensor y = group_norm_via_nchw(in, groups)
                     ? at::group_norm(in.contiguous(), groups, w, b, eps).contiguous(at::MemoryFormat::ChannelsLast)
                     : at::group_norm(in, groups, w, b, eps);
  return silu ? at::silu(y) : y;
}

}  // namespace

extern "C" {

ddpm_error ddpm_group_norm(ddpm_mode mode, ddpm_tensor x, ddpm_tensor shift, int64_t groups, ddpm_tensor weight,
                           ddpm_tensor bias, double eps, int32_t silu, int32_t kernel, ddpm_tensor* out) {
  // Under autocast GroupNorm runs in float32 on every device: its input
  // arrives in the lower precision from a convolution while its weights are
  // float32, a mix libtorch 1.13's CPU kernel refuses. With the SiLU, under
  // bf16 autocast, a bfloat16 x the kernel takes stays bfloat16 in memory
  // and so does the output: what follows it in every model is a convolution,
  // which autocast would give the float32 output rounded to bfloat16 just so
  // (the same values, without two conversion passes).
  DDPM_TRY(mode, {
    const at::Tensor& in = ref(x);
    const at::Tensor sh = ddpm::fp32_if_autocast(mode, ddpm::optional(shift));
    const at::Tensor w = ddpm::fp32_if_autocast(mode, ddpm::optional(weight));
    const at::Tensor b = ddpm::fp32_if_autocast(mode, ddpm::optional(bias));
    TORCH_CHECK(in.dim() >= 2, "group_norm: input needs at least 2 dims (N, C, ...), got ", in.dim());
    TORCH_CHECK(groups > 0 && in.size(1) % groups == 0, "group_norm: ", in.size(1),
                " channels do not split into ", groups, " groups");
    if (sh.defined()) {
      TORCH_CHECK(sh.dim() == 2 && sh.size(0) == in.size(0) && sh.size(1) == in.size(1),
                  "group_norm: shift must be (N, C) = (", in.size(0), ", ", in.size(1), "), got ", sh.sizes());
    }
    bool channels_last = false;
    if (kernel != 0 && silu != 0 && (mode & DDPM_AUTOCAST_BF16) != 0 &&
        fused_group_norm_takes(in, sh, w, b, true, &channels_last)) {
      *out = wrap(fused_group_norm<uint16_t>(in, sh, groups, w, b, eps, true, channels_last));
      return nullptr;
    }
    const at::Tensor in32 = ddpm::fp32_if_autocast(mode, in);
    if (kernel != 0 && fused_group_norm_takes(in32, sh, w, b, false, &channels_last)) {
      *out = wrap(fused_group_norm<float>(in32, sh, groups, w, b, eps, silu != 0, channels_last));
    } else {
      *out = wrap(aten_group_norm(in32, sh, groups, w, b, eps, silu != 0));
    }
  });
}

}  // extern "C"
