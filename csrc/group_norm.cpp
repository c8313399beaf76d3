// group_norm.cpp: GroupNorm, optionally after a per-channel shift and
// followed by SiLU, the way the U-Net's and the autoencoder's residual
// blocks use it: SiLU(GroupNorm(x + shift)).
//
// On the CPU in float32 (a bf16 input under autocast is made float32 first,
// as for libtorch's GroupNorm) the shim runs its own kernel: two
// reading passes for each group's mean and centred variance and one that
// writes the normalised, shifted and activated value, a sample at a time
// while its map is in the cache, where libtorch 1.13 takes a pass for the
// add, two or three for GroupNorm (its channels-last kernel walks each
// group's channels apart) and two for SiLU, each spread over the threads on
// its own. BenchmarkGroupNormSiLU (package torch), the small preset's
// channels-last maps with a shift, two runs: 0.54-0.62 / 0.36-0.39 /
// 0.35-0.39 of libtorch's time at 8 x 32 x 32 x 32 / 8 x 64 x 16 x 16 /
// 8 x 64 x 8 x 8 on one thread (a serving worker's forward), 0.20-0.22 /
// 0.15-0.18 at batch 1 on two threads (one request's). torch's
// SetGroupNormKernel(false) turns the kernel off. Each sample's statistics are summed in a fixed order of
// 256-pixel chunks (float within a chunk, double across), so a sample's
// values depend neither on the batch around it nor on the thread count.
// Under autograd the kernel has its own backward (FusedGroupNorm): one pass
// for the gradient at the normalised value and its sums, one for dx; in the
// small preset's bf16 training step at batch 64 (NCHW, two threads) the two
// took 16.9 + 23.8 ms against libtorch's GroupNorm, SiLU, their backwards
// and the add, 56.3 + 2.5 ms (ddpm bench --profile). On other devices and in
// other dtypes libtorch's ops run.
#include <cmath>
#include <cstring>
#include <vector>

#include <ATen/Parallel.h>
#include <ATen/record_function.h>
#include <torch/csrc/autograd/custom_function.h>

#include "shim.h"

using ddpm::ref;
using ddpm::wrap;

// The vectorised loops below are compiled for AVX-512, AVX2 and the x86-64
// baseline, picked at load time by the CPU (function multiversioning of GCC
// 11 and later, which knows these levels);
// elsewhere they are compiled once for the target.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11
#define DDPM_VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define DDPM_VECTOR_CLONES
#endif

namespace {

constexpr int64_t kChunk = 256;  // pixels (channels-last) or values (NCHW) summed in float
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

// acc[c] = the sum over the pixels of d = x[p, c] - center[c], or of d^2
// when squares, for channels-last pixels of C channels.
DDPM_VECTOR_CLONES
void pixel_sums(const float* __restrict x, int64_t pixels, int64_t C, const float* __restrict center, bool squares,
                float* __restrict acc) {
  for (int64_t c = 0; c < C; c++) acc[c] = 0.f;
  if (squares) {
    for (int64_t p = 0; p < pixels; p++)
      for (int64_t c = 0; c < C; c++) {
        const float d = x[p * C + c] - center[c];
        acc[c] += d * d;
      }
  } else {
    for (int64_t p = 0; p < pixels; p++)
      for (int64_t c = 0; c < C; c++) acc[c] += x[p * C + c] - center[c];
  }
}

// The sum of d = x[i] - center, or of d^2 when squares, over n contiguous
// values, in kLanes partial sums added in a fixed order.
DDPM_VECTOR_CLONES
float plane_sum(const float* __restrict x, int64_t n, float center, bool squares) {
  float lanes[kLanes] = {};
  const int64_t whole = n / kLanes * kLanes;
  if (squares) {
    for (int64_t i = 0; i < whole; i += kLanes)
      for (int j = 0; j < kLanes; j++) {
        const float d = x[i + j] - center;
        lanes[j] += d * d;
      }
  } else {
    for (int64_t i = 0; i < whole; i += kLanes)
      for (int j = 0; j < kLanes; j++) lanes[j] += x[i + j] - center;
  }
  float sum = 0.f;
  for (int j = 0; j < kLanes; j++) sum += lanes[j];
  for (int64_t i = whole; i < n; i++) {
    const float d = x[i] - center;
    sum += squares ? d * d : d;
  }
  return sum;
}

// y[p, c] = act((x[p, c] - center[c]) scale[c] + bias[c]) for channels-last
// pixels.
DDPM_VECTOR_CLONES
void pixel_apply(const float* __restrict x, float* __restrict y, int64_t pixels, int64_t C,
                 const float* __restrict center, const float* __restrict scale, const float* __restrict bias,
                 bool silu) {
  if (C % kLanes == 0) {
    // A vector of channels at a time, its constants held in registers: no
    // remainder loop for each pixel.
    for (int64_t c0 = 0; c0 < C; c0 += kLanes) {
      float m[kLanes], a[kLanes], b[kLanes];
      for (int j = 0; j < kLanes; j++) m[j] = center[c0 + j], a[j] = scale[c0 + j], b[j] = bias[c0 + j];
      if (silu) {
        for (int64_t p = 0; p < pixels; p++)
          for (int j = 0; j < kLanes; j++) y[p * C + c0 + j] = silu_float((x[p * C + c0 + j] - m[j]) * a[j] + b[j]);
      } else {
        for (int64_t p = 0; p < pixels; p++)
          for (int j = 0; j < kLanes; j++) y[p * C + c0 + j] = (x[p * C + c0 + j] - m[j]) * a[j] + b[j];
      }
    }
    return;
  }
  for (int64_t p = 0; p < pixels; p++) {
    const float* xp = x + p * C;
    float* yp = y + p * C;
    if (silu) {
      for (int64_t c = 0; c < C; c++) yp[c] = silu_float((xp[c] - center[c]) * scale[c] + bias[c]);
    } else {
      for (int64_t c = 0; c < C; c++) yp[c] = (xp[c] - center[c]) * scale[c] + bias[c];
    }
  }
}

// y[i] = act((x[i] - center) scale + bias) over n contiguous values.
DDPM_VECTOR_CLONES
void plane_apply(const float* __restrict x, float* __restrict y, int64_t n, float center, float scale, float bias,
                 bool silu) {
  if (silu) {
    for (int64_t i = 0; i < n; i++) y[i] = silu_float((x[i] - center) * scale + bias);
  } else {
    for (int64_t i = 0; i < n; i++) y[i] = (x[i] - center) * scale + bias;
  }
}

// silu'(v) = s (1 + v (1 - s)), s = sigmoid(v).
inline float silu_grad_float(float v) {
  const float s = 1.f / (1.f + exp_float(-v));
  return s * (1.f + v * (1.f - s));
}

// The backward's first pass over channels-last pixels: g, the gradient at
// v = xhat w + b (dy, times silu'(v) when silu), into g_out, and per channel
// the sums of g, g xhat and xhat, where xhat = (x - center) rstd is the
// normalised value.
DDPM_VECTOR_CLONES
void pixel_grad_sums(const float* __restrict x, const float* __restrict dy, float* __restrict g_out, int64_t pixels,
                     int64_t C, const float* __restrict center, const float* __restrict rstd,
                     const float* __restrict w, const float* __restrict b, bool silu, float* __restrict sg,
                     float* __restrict sgx, float* __restrict sx) {
  for (int64_t c = 0; c < C; c++) sg[c] = sgx[c] = sx[c] = 0.f;
  for (int64_t p = 0; p < pixels; p++) {
    const float* xp = x + p * C;
    const float* dp = dy + p * C;
    float* gp = g_out + p * C;
    if (silu) {
      for (int64_t c = 0; c < C; c++) {
        const float xh = (xp[c] - center[c]) * rstd[c];
        const float g = dp[c] * silu_grad_float(xh * w[c] + b[c]);
        gp[c] = g;
        sg[c] += g, sgx[c] += g * xh, sx[c] += xh;
      }
    } else {
      for (int64_t c = 0; c < C; c++) {
        const float xh = (xp[c] - center[c]) * rstd[c];
        gp[c] = dp[c];
        sg[c] += dp[c], sgx[c] += dp[c] * xh, sx[c] += xh;
      }
    }
  }
}

// The same over n contiguous values of one channel: sums[0..2] = the sums of
// g, g xhat and xhat, each in kLanes partial sums added in a fixed order.
DDPM_VECTOR_CLONES
void plane_grad_sums(const float* __restrict x, const float* __restrict dy, float* __restrict g_out, int64_t n,
                     float center, float rstd, float w, float b, bool silu, float* __restrict sums) {
  float lg[kLanes] = {}, lgx[kLanes] = {}, lx[kLanes] = {};
  const int64_t whole = n / kLanes * kLanes;
  for (int64_t i = 0; i < whole; i += kLanes)
    for (int j = 0; j < kLanes; j++) {
      const float xh = (x[i + j] - center) * rstd;
      const float g = silu ? dy[i + j] * silu_grad_float(xh * w + b) : dy[i + j];
      g_out[i + j] = g;
      lg[j] += g, lgx[j] += g * xh, lx[j] += xh;
    }
  float sg = 0.f, sgx = 0.f, sx = 0.f;
  for (int j = 0; j < kLanes; j++) sg += lg[j], sgx += lgx[j], sx += lx[j];
  for (int64_t i = whole; i < n; i++) {
    const float xh = (x[i] - center) * rstd;
    const float g = silu ? dy[i] * silu_grad_float(xh * w + b) : dy[i];
    g_out[i] = g;
    sg += g, sgx += g * xh, sx += xh;
  }
  sums[0] = sg, sums[1] = sgx, sums[2] = sx;
}

// The backward's second pass over channels-last pixels, in place on the
// first pass's g: dx = rstd (w g - ga - xhat gb), ga and gb per channel (its
// group's).
DDPM_VECTOR_CLONES
void pixel_grad_input(const float* __restrict x, float* __restrict g_dx, int64_t pixels, int64_t C,
                      const float* __restrict center, const float* __restrict rstd, const float* __restrict w,
                      const float* __restrict ga, const float* __restrict gb) {
  for (int64_t p = 0; p < pixels; p++) {
    const float* xp = x + p * C;
    float* op = g_dx + p * C;
    for (int64_t c = 0; c < C; c++) {
      const float xh = (xp[c] - center[c]) * rstd[c];
      op[c] = rstd[c] * (w[c] * op[c] - ga[c] - xh * gb[c]);
    }
  }
}

// The same over n contiguous values of one channel.
DDPM_VECTOR_CLONES
void plane_grad_input(const float* __restrict x, float* __restrict g_dx, int64_t n, float center, float rstd, float w,
                      float ga, float gb) {
  for (int64_t i = 0; i < n; i++) {
    const float xh = (x[i] - center) * rstd;
    g_dx[i] = rstd * (w * g_dx[i] - ga - xh * gb);
  }
}

// The shim's kernel: x float32, contiguous (NCHW, any number of spatial
// dims) or channels-last (4-D); shift (N, C) or undefined; weight and bias
// (C) or undefined. Sums in float lose the low bits of a mean far from zero,
// so the first pass sums x less its first value in each sample's channel
// (a pivot), the second the squares of x less the mean, and the output is
// computed from x less the mean too: the rounding scales with the spread
// of the values, not with their size.
// center_out and rstd_out, when not null, receive what the backward needs:
// per sample and channel (N, C) the value subtracted from x and its group's
// 1 / sqrt(variance + eps).
at::Tensor fused_group_norm(const at::Tensor& x, const at::Tensor& shift, int64_t groups, const at::Tensor& weight,
                            const at::Tensor& bias, double eps, bool silu, bool channels_last,
                            at::Tensor* center_out = nullptr, at::Tensor* rstd_out = nullptr) {
  // Named for libtorch's profiler (ddpm bench --profile), like an operator.
  RECORD_FUNCTION(silu ? "ddpm::group_norm_silu" : "ddpm::group_norm", std::vector<c10::IValue>());
  const int64_t N = x.size(0), C = x.size(1), P = x.numel() / (N * C), D = C / groups;
  const int64_t chunks = (P + kChunk - 1) / kChunk;
  at::Tensor y = at::empty_strided(x.sizes(), x.strides(), x.options());
  const float* xd = x.data_ptr<float>();
  float* yd = y.data_ptr<float>();
  const at::Tensor sh = shift.defined() ? shift.contiguous() : shift;
  const at::Tensor w = weight.defined() ? weight.contiguous() : weight;
  const at::Tensor b = bias.defined() ? bias.contiguous() : bias;
  const float* shd = sh.defined() ? sh.data_ptr<float>() : nullptr;
  const float* wd = w.defined() ? w.data_ptr<float>() : nullptr;
  const float* bd = b.defined() ? b.data_ptr<float>() : nullptr;
  // x's value of sample n, channel c, pixel 0.
  auto first = [&](int64_t n, int64_t c) { return channels_last ? xd[n * P * C + c] : xd[(n * C + c) * P]; };

  // center[n C + c]: what the pass subtracts from x of sample n, channel c:
  // the pivot, then the group mean of x + shift less shift[n, c].
  at::Tensor center_t = at::empty({N, C}, x.options()), rstd_t = at::empty({N, C}, x.options());
  float* center = center_t.data_ptr<float>();
  float* rstd_c = rstd_t.data_ptr<float>();
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
        at::parallel_for(n0 * chunks, n1 * chunks, 1, [&](int64_t u0, int64_t u1) {
          std::vector<float> acc(static_cast<size_t>(C));
          for (int64_t u = u0; u < u1; u++) {
            const int64_t n = u / chunks, k = u % chunks, p0 = k * kChunk, p1 = std::min(P, p0 + kChunk);
            pixel_sums(xd + (n * P + p0) * C, p1 - p0, C, center + n * C, squares, acc.data());
            for (int64_t c = 0; c < C; c++) part[(n * C + c) * chunks + k] = acc[c];
          }
        });
      } else {
        at::parallel_for(n0 * C * chunks, n1 * C * chunks, 1, [&](int64_t u0, int64_t u1) {
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
        for (int64_t c = g * D; c < (g + 1) * D; c++) {
          scale[n * C + c] = static_cast<float>(rstd * (wd != nullptr ? wd[c] : 1.0));
          rstd_c[n * C + c] = static_cast<float>(rstd);
        }
      }
    if (channels_last) {
      at::parallel_for(n0 * chunks, n1 * chunks, 1, [&](int64_t u0, int64_t u1) {
        for (int64_t u = u0; u < u1; u++) {
          const int64_t n = u / chunks, p0 = u % chunks * kChunk, p1 = std::min(P, p0 + kChunk);
          pixel_apply(xd + (n * P + p0) * C, yd + (n * P + p0) * C, p1 - p0, C, center + n * C,
                      scale.data() + n * C, offset.data(), silu);
        }
      });
    } else {
      at::parallel_for(n0 * C, n1 * C, 1, [&](int64_t u0, int64_t u1) {
        for (int64_t nc = u0; nc < u1; nc++)
          plane_apply(xd + nc * P, yd + nc * P, P, center[nc], scale[nc], offset[nc % C], silu);
      });
    }
  };
  // A sample at a time while its map is in the cache, the samples spread
  // over the threads; a batch smaller than the thread count spreads each
  // pass's chunks instead.
  if (N >= at::get_num_threads()) {
    at::parallel_for(0, N, 1, [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; n++) normalize(n, n + 1);
    });
  } else {
    normalize(0, N);
  }
  if (center_out != nullptr) *center_out = center_t;
  if (rstd_out != nullptr) *rstd_out = rstd_t;
  return y;
}

// The gradients of fused_group_norm's output y with respect to x, shift,
// weight and bias, given dy (any layout) and the forward's center and rstd.
// With xhat the normalised value and g the gradient at xhat w + b (through
// SiLU when silu), per sample and group of count M:
//   dx = rstd (w g - sum(w g) / M - xhat sum(w g xhat) / M),
//   dshift[n, c] = the sum of dx over the channel's pixels,
//   dweight = the sum of g xhat, dbias = the sum of g, over samples and pixels.
// Two passes, a sample at a time, chunk sums as in the forward: the first
// reads x and dy and writes g where dx goes, the second turns g into dx.
std::vector<at::Tensor> fused_group_norm_backward(const at::Tensor& x, const at::Tensor& dy_in, const at::Tensor& center_t,
                                                  const at::Tensor& rstd_t, const at::Tensor& weight,
                                                  const at::Tensor& bias, int64_t groups, bool silu, bool channels_last) {
  RECORD_FUNCTION(silu ? "ddpm::group_norm_silu_backward" : "ddpm::group_norm_backward", std::vector<c10::IValue>());
  const int64_t N = x.size(0), C = x.size(1), P = x.numel() / (N * C), D = C / groups;
  const int64_t chunks = (P + kChunk - 1) / kChunk;
  const at::Tensor dy = dy_in.to(at::kFloat).contiguous(channels_last ? at::MemoryFormat::ChannelsLast
                                                                       : at::MemoryFormat::Contiguous);
  at::Tensor dx = at::empty_strided(x.sizes(), x.strides(), x.options());
  const float* xd = x.data_ptr<float>();
  const float* dyd = dy.data_ptr<float>();
  float* dxd = dx.data_ptr<float>();
  const float* center = center_t.data_ptr<float>();
  const float* rstd = rstd_t.data_ptr<float>();
  std::vector<float> w(static_cast<size_t>(C), 1.f), b(static_cast<size_t>(C), 0.f);
  if (weight.defined()) std::memcpy(w.data(), weight.contiguous().data_ptr<float>(), sizeof(float) * C);
  if (bias.defined()) std::memcpy(b.data(), bias.contiguous().data_ptr<float>(), sizeof(float) * C);
  // Per sample and channel: the chunks' float sums of g, g xhat and xhat,
  // then their double totals; ga, gb: the group terms per channel.
  std::vector<float> part(static_cast<size_t>(N * C * chunks * 3));
  std::vector<double> sg(static_cast<size_t>(N * C)), sgx(static_cast<size_t>(N * C)), sx(static_cast<size_t>(N * C));
  std::vector<float> ga(static_cast<size_t>(N * C)), gb(static_cast<size_t>(N * C));
  auto grads = [&](int64_t n0, int64_t n1) {
    if (channels_last) {
      at::parallel_for(n0 * chunks, n1 * chunks, 1, [&](int64_t u0, int64_t u1) {
        std::vector<float> acc(static_cast<size_t>(3 * C));
        for (int64_t u = u0; u < u1; u++) {
          const int64_t n = u / chunks, k = u % chunks, p0 = k * kChunk, p1 = std::min(P, p0 + kChunk);
          pixel_grad_sums(xd + (n * P + p0) * C, dyd + (n * P + p0) * C, dxd + (n * P + p0) * C, p1 - p0, C,
                          center + n * C, rstd + n * C, w.data(), b.data(), silu, acc.data(), acc.data() + C,
                          acc.data() + 2 * C);
          for (int64_t c = 0; c < C; c++)
            for (int j = 0; j < 3; j++) part[((n * C + c) * chunks + k) * 3 + j] = acc[j * C + c];
        }
      });
    } else {
      at::parallel_for(n0 * C * chunks, n1 * C * chunks, 1, [&](int64_t u0, int64_t u1) {
        for (int64_t u = u0; u < u1; u++) {
          const int64_t nc = u / chunks, c = nc % C, k = u % chunks, i0 = k * kChunk, i1 = std::min(P, i0 + kChunk);
          plane_grad_sums(xd + nc * P + i0, dyd + nc * P + i0, dxd + nc * P + i0, i1 - i0, center[nc], rstd[nc], w[c],
                          b[c], silu, part.data() + u * 3);
        }
      });
    }
    const double count = static_cast<double>(P * D);
    for (int64_t n = n0; n < n1; n++) {
      for (int64_t c = 0; c < C; c++) {
        double a = 0, ax = 0, x1 = 0;
        for (int64_t k = 0; k < chunks; k++) {
          const float* q = part.data() + ((n * C + c) * chunks + k) * 3;
          a += q[0], ax += q[1], x1 += q[2];
        }
        sg[n * C + c] = a, sgx[n * C + c] = ax, sx[n * C + c] = x1;
      }
      for (int64_t g = 0; g < groups; g++) {
        double a = 0, ax = 0;
        for (int64_t c = g * D; c < (g + 1) * D; c++) a += w[c] * sg[n * C + c], ax += w[c] * sgx[n * C + c];
        for (int64_t c = g * D; c < (g + 1) * D; c++)
          ga[n * C + c] = static_cast<float>(a / count), gb[n * C + c] = static_cast<float>(ax / count);
      }
    }
    if (channels_last) {
      at::parallel_for(n0 * chunks, n1 * chunks, 1, [&](int64_t u0, int64_t u1) {
        for (int64_t u = u0; u < u1; u++) {
          const int64_t n = u / chunks, p0 = u % chunks * kChunk, p1 = std::min(P, p0 + kChunk);
          pixel_grad_input(xd + (n * P + p0) * C, dxd + (n * P + p0) * C, p1 - p0, C, center + n * C, rstd + n * C,
                           w.data(), ga.data() + n * C, gb.data() + n * C);
        }
      });
    } else {
      at::parallel_for(n0 * C, n1 * C, 1, [&](int64_t u0, int64_t u1) {
        for (int64_t nc = u0; nc < u1; nc++)
          plane_grad_input(xd + nc * P, dxd + nc * P, P, center[nc], rstd[nc], w[nc % C], ga[nc], gb[nc]);
      });
    }
  };
  if (N >= at::get_num_threads()) {
    at::parallel_for(0, N, 1, [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; n++) grads(n, n + 1);
    });
  } else {
    grads(0, N);
  }
  at::Tensor dshift = at::empty({N, C}, x.options()), dw = at::empty({C}, x.options()), db = at::empty({C}, x.options());
  float* dsd = dshift.data_ptr<float>();
  float* dwd = dw.data_ptr<float>();
  float* dbd = db.data_ptr<float>();
  for (int64_t c = 0; c < C; c++) {
    double a = 0, ax = 0;
    for (int64_t n = 0; n < N; n++) a += sg[n * C + c], ax += sgx[n * C + c];
    dbd[c] = static_cast<float>(a), dwd[c] = static_cast<float>(ax);
  }
  for (int64_t n = 0; n < N; n++)
    for (int64_t c = 0; c < C; c++) {
      const int64_t i = n * C + c;
      dsd[i] = static_cast<float>(rstd[i] * (w[c] * sg[i] - static_cast<double>(P) * ga[i] - sx[i] * gb[i]));
    }
  return {dx, dshift, dw, db};
}

// t, or an empty tensor for an undefined one: libtorch's custom autograd
// functions take defined tensors only.
at::Tensor or_empty(const at::Tensor& t) { return t.defined() ? t : at::empty({0}); }

// t, or undefined for an empty one: or_empty's inverse.
at::Tensor or_undefined(const at::Tensor& t) { return t.numel() == 0 ? at::Tensor() : t; }

// SiLU(GroupNorm(x + shift)) (or without the SiLU) under autograd: the
// shim's kernel forward and backward; shift, weight and bias are empty for
// none. Only first derivatives: the trainer takes no gradient of a gradient.
struct FusedGroupNorm : public torch::autograd::Function<FusedGroupNorm> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& shift,
                            const at::Tensor& weight, const at::Tensor& bias, int64_t groups, double eps, bool silu,
                            bool channels_last) {
    at::Tensor center, rstd;
    at::Tensor y = fused_group_norm(x, or_undefined(shift), groups, or_undefined(weight), or_undefined(bias), eps, silu,
                                    channels_last, &center, &rstd);
    ctx->save_for_backward({x, weight, bias});
    ctx->saved_data["center"] = center;
    ctx->saved_data["rstd"] = rstd;
    ctx->saved_data["groups"] = groups;
    ctx->saved_data["silu"] = silu;
    ctx->saved_data["channels_last"] = channels_last;
    ctx->saved_data["shift"] = shift.defined();
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], weight = or_undefined(saved[1]), bias = or_undefined(saved[2]);
    auto g = fused_group_norm_backward(x, grads[0], ctx->saved_data["center"].toTensor(),
                                       ctx->saved_data["rstd"].toTensor(), weight, bias,
                                       ctx->saved_data["groups"].toInt(), ctx->saved_data["silu"].toBool(),
                                       ctx->saved_data["channels_last"].toBool());
    const bool shift = ctx->saved_data["shift"].toBool();
    return {g[0], shift ? g[1] : at::Tensor(), weight.defined() ? g[2] : at::Tensor(),
            bias.defined() ? g[3] : at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// Whether the shim's kernel takes x: see the file comment. The layout it
// reads x in is set in channels_last.
bool fused_group_norm_takes(const at::Tensor& x, const at::Tensor& shift, int64_t groups, const at::Tensor& weight,
                            const at::Tensor& bias, bool* channels_last) {
  auto float_cpu = [](const at::Tensor& t) {
    return !t.defined() || (t.device().is_cpu() && t.scalar_type() == at::kFloat);
  };
  if (!x.device().is_cpu() || x.scalar_type() != at::kFloat || x.dim() < 3 || x.numel() == 0) return false;
  if (!float_cpu(shift) || !float_cpu(weight) || !float_cpu(bias)) return false;
  if (groups <= 0 || x.size(1) % groups != 0) return false;
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
  // float32, a mix libtorch 1.13's CPU kernel refuses.
  DDPM_TRY(mode, {
    at::Tensor in = ddpm::fp32_if_autocast(mode, ref(x));
    at::Tensor sh = ddpm::fp32_if_autocast(mode, ddpm::optional(shift));
    at::Tensor w = ddpm::fp32_if_autocast(mode, ddpm::optional(weight));
    at::Tensor b = ddpm::fp32_if_autocast(mode, ddpm::optional(bias));
    TORCH_CHECK(in.dim() >= 2, "group_norm: input needs at least 2 dims (N, C, ...), got ", in.dim());
    TORCH_CHECK(groups > 0 && in.size(1) % groups == 0, "group_norm: ", in.size(1),
                " channels do not split into ", groups, " groups");
    if (sh.defined()) {
      TORCH_CHECK(sh.dim() == 2 && sh.size(0) == in.size(0) && sh.size(1) == in.size(1),
                  "group_norm: shift must be (N, C) = (", in.size(0), ", ", in.size(1), "), got ", sh.sizes());
    }
    bool channels_last = false;
    if (kernel != 0 && fused_group_norm_takes(in, sh, groups, w, b, &channels_last) &&
        (!w.defined() || w.numel() == in.size(1)) && (!b.defined() || b.numel() == in.size(1))) {
      const bool grad = at::GradMode::is_enabled() &&
                        (in.requires_grad() || (sh.defined() && sh.requires_grad()) ||
                         (w.defined() && w.requires_grad()) || (b.defined() && b.requires_grad()));
      *out = wrap(grad ? FusedGroupNorm::apply(in, or_empty(sh), or_empty(w), or_empty(b), groups, eps, silu != 0,
                                               channels_last)
                       : fused_group_norm(in, sh, groups, w, b, eps, silu != 0, channels_last));
    } else {
      *out = wrap(aten_group_norm(in, sh, groups, w, b, eps, silu != 0));
    }
  });
}

}  // extern "C"
