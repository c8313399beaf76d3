// narrow_conv.cpp: 3x3 convolutions (stride 1, padding 1) into a few
// output channels (1 to 8) of channels-last float32 maps whose input
// channels are a multiple of 16, on CPUs with AVX-512 or AVX2, for
// inference: the last convolution of a U-Net (into the image's channels)
// and of an autoencoder's decoder.
//
// The Winograd kernel needs output channels in sixteens, and oneDNN runs
// these at a few GFLOP/s: 0.67 ms for the small preset's last convolution
// (32 channels into 1 at 32x32) at batch 8 on one thread, 2.3 ms for the
// cifar10 preset's (128 into 3). Here a few output pixels at a time sum,
// for each output channel, their nine input pixels' channels times the
// weight in 16 lanes (two of AVX2's vectors), then the 16 lanes in a fixed
// order, plus the bias: every value in the same order whatever the batch,
// the threads or the vectors.
#include <algorithm>
#include <vector>

#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include "lanes.h"
#include "shim.h"

using ddpm::divup;

namespace {

constexpr int64_t kMaxChannels = 8;  // the most output channels

// The weight (OC, C, 3, 3) as (OC, 3, 3, C): each output channel's taps
// with their channels contiguous, as the input's pixels hold them.
at::Tensor narrow_weight(const at::Tensor& w) { return w.permute({0, 2, 3, 1}).contiguous(); }

#if DDPM_LANES

// Output pixels p .. p + P of image-major pixels (N, H, W), OC channels
// each, into y, from x (N, H, W, C), the weight's taps Wt (OC, 9, C) and C
// zero floats for the taps outside the map.
template <int L, int OC, int P>
DDPM_INLINE void narrow_pixels(const float* x, const float* Wt, const float* bias, const float* zeros, float* y,
                               int64_t H, int64_t W, int64_t C, int64_t p) {
  using V = ddpm::Lanes<L>;
  constexpr int kVectors = 16 / L;  // vectors of a 16-lane sum
  typename V::vec acc[P][OC][kVectors] = {};
  int64_t n[P], py[P], px[P];  // the pixels' image, row and column
  for (int i = 0; i < P; i++) n[i] = (p + i) / (H * W), py[i] = (p + i) / W % H, px[i] = (p + i) % W;
  for (int t = 0; t < 9; t++) {
    const float* in[P];
    for (int i = 0; i < P; i++) {
      const int64_t sy = py[i] + t / 3 - 1, sx = px[i] + t % 3 - 1;
      in[i] = sy < 0 || sy >= H || sx < 0 || sx >= W ? zeros : x + ((n[i] * H + sy) * W + sx) * C;
    }
    for (int64_t c = 0; c < C; c += 16)
      for (int v = 0; v < kVectors; v++) {
        typename V::vec w[OC];
        for (int o = 0; o < OC; o++) w[o] = V::load(Wt + (o * 9 + t) * C + c + L * v);
        for (int i = 0; i < P; i++) {
          const typename V::vec xv = V::load(in[i] + c + L * v);
          for (int o = 0; o < OC; o++) acc[i][o][v] += xv * w[o];
        }
      }
  }
  for (int i = 0; i < P; i++)
    for (int o = 0; o < OC; o++) {
      float lanes[16];
      for (int v = 0; v < kVectors; v++) V::store(lanes + L * v, acc[i][o][v]);
      for (int step = 8; step >= 1; step /= 2)  // pairs at distance 8, 4, 2, 1
        for (int j = 0; j < step; j++) lanes[j] += lanes[j + step];
      y[(p + i) * OC + o] = bias != nullptr ? lanes[0] + bias[o] : lanes[0];
    }
}

// Pixels p0 .. p1 in groups of P (as many as the registers hold), the rest
// one at a time.
template <int L, int OC>
DDPM_INLINE void narrow_range(const float* x, const float* Wt, const float* bias, const float* zeros, float* y,
                              int64_t H, int64_t W, int64_t C, int64_t p0, int64_t p1) {
  constexpr int P = std::max(1, (L == 16 ? 8 : 4) / OC);
  int64_t p = p0;
  for (; p + P <= p1; p += P) narrow_pixels<L, OC, P>(x, Wt, bias, zeros, y, H, W, C, p);
  for (; p < p1; p++) narrow_pixels<L, OC, 1>(x, Wt, bias, zeros, y, H, W, C, p);
}

template <int L>
DDPM_INLINE void narrow_any(const float* x, const float* Wt, const float* bias, const float* zeros, float* y,
                            int64_t H, int64_t W, int64_t C, int64_t OC, int64_t p0, int64_t p1) {
  switch (OC) {
    case 1: return narrow_range<L, 1>(x, Wt, bias, zeros, y, H, W, C, p0, p1);
    case 2: return narrow_range<L, 2>(x, Wt, bias, zeros, y, H, W, C, p0, p1);
    case 3: return narrow_range<L, 3>(x, Wt, bias, zeros, y, H, W, C, p0, p1);
    case 4: return narrow_range<L, 4>(x, Wt, bias, zeros, y, H, W, C, p0, p1);
    case 5: return narrow_range<L, 5>(x, Wt, bias, zeros, y, H, W, C, p0, p1);
    case 6: return narrow_range<L, 6>(x, Wt, bias, zeros, y, H, W, C, p0, p1);
    case 7: return narrow_range<L, 7>(x, Wt, bias, zeros, y, H, W, C, p0, p1);
    default: return narrow_range<L, 8>(x, Wt, bias, zeros, y, H, W, C, p0, p1);
  }
}

#define DDPM_RANGE_ARGS                                                                                            \
  const float *x, const float *Wt, const float *bias, const float *zeros, float *y, int64_t H, int64_t W, int64_t C, \
      int64_t OC, int64_t p0, int64_t p1
__attribute__((target("arch=x86-64-v4"))) void narrow_avx512(DDPM_RANGE_ARGS) {
  narrow_any<16>(x, Wt, bias, zeros, y, H, W, C, OC, p0, p1);
}
__attribute__((target("arch=x86-64-v3"))) void narrow_avx2(DDPM_RANGE_ARGS) {
  narrow_any<8>(x, Wt, bias, zeros, y, H, W, C, OC, p0, p1);
}
#undef DDPM_RANGE_ARGS

#endif  // DDPM_LANES

}  // namespace

namespace ddpm {

bool narrow_conv_takes(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, const int64_t* stride,
                       const int64_t* padding, const int64_t* dilation, int64_t groups) {
  return vector_conv_takes(x, w, bias, stride, padding, dilation, groups, 3, 1, false) && x.size(1) % 16 == 0 &&
         w.size(0) <= kMaxChannels;
}

at::Tensor narrow_conv(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias) {
#if DDPM_LANES
  const int isa = vector_isa();
  TORCH_CHECK(isa != DDPM_VECTORS_NONE, "narrow_conv: this CPU has neither AVX-512 nor AVX2");
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), OC = w.size(0);
  const at::Tensor Wt = derived_weight(w, WeightForm::kNarrow, OC * 9 * C * 4, narrow_weight);
  if (!Wt.defined()) return Wt;  // over the weight cache's limit: libtorch's convolution
  RECORD_FUNCTION("ddpm::narrow_conv", std::vector<c10::IValue>({x}));
  at::Tensor y = at::empty({N, OC, H, W}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  const std::vector<float> zeros(static_cast<size_t>(C));
  const float* xp = x.data_ptr<float>();
  const float* wp = Wt.data_ptr<float>();
  const float* bp = bias.defined() ? bias.data_ptr<float>() : nullptr;
  float* yp = y.data_ptr<float>();
  // Each thread takes at least 1 MFLOP: one request's 32x32 map of 32
  // channels into 1 (0.6 MFLOP) stays on one thread.
  const int64_t grain = divup(int64_t{1000000}, 18 * C * OC);
  at::parallel_for(0, N * H * W, grain, [&](int64_t p0, int64_t p1) {
    (isa == DDPM_VECTORS_AVX512 ? narrow_avx512 : narrow_avx2)(xp, wp, bp, zeros.data(), yp, H, W, C, OC, p0, p1);
  });
  return y;
#else
  TORCH_CHECK(false, "narrow_conv: not built for this CPU");
#endif
}

}  // namespace ddpm
