// pointwise_conv.cpp: 1x1 convolutions (stride 1, no padding) of
// channels-last float32 maps on CPUs with AVX-512 or AVX2, for inference.
//
// On a channels-last map a 1x1 convolution is one matrix product: the
// pixels (N H W rows of C values) times the weight's transpose (C x OC,
// kept by the weight cache), plus the bias. The shim's register-blocked
// kernel (lanes_gemm.h) computes it in blocks of pixels and groups of 64
// output channels, each block's products written straight into the output.
// libtorch sends these to oneDNN (its mkldnn_convolution spent about 60 us
// a call beyond oneDNN's own time, the small preset's forward at batch 8 on
// one thread) or, at batch 1 on two threads, to its own im2col and GEMM.
// On the small preset's 1x1 convolutions (its attention's q, k, v and
// projection, its residual blocks' shortcuts) this took 0.59-0.94 of
// libtorch's time at batch 8 on one thread and 0.22-0.65 at batch 1 on two
// (BenchmarkPointwiseConvShapes in package torch, an AVX-512 Xeon). The
// bias, and a residual connection's input (nn.cpp), are added while the
// block is in the cache. Every value is
// summed over the input channels in order, so an image's values depend
// neither on the batch around it, nor on the thread count, nor on the
// vectors. With autograd, under autocast, in other dtypes, layouts or
// shapes, on other devices and CPUs libtorch's convolution runs, and
// torch's SetPointwiseConv(false) chooses it everywhere.
#include <algorithm>
#include <vector>

#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include "lanes_gemm.h"
#include "shim.h"

using ddpm::divup;

namespace {

// The weight (OC, C, 1, 1) as the product's right-hand matrix: (C, OC).
at::Tensor pointwise_weight(const at::Tensor& w) {
  return w.reshape({w.size(0), w.size(1)}).t().contiguous();
}

#if DDPM_LANES

constexpr int64_t kBlockRows = 48;  // pixels a unit of work takes
// The least work a thread takes, in flops: one image's 32x32 shortcut
// (96 channels into 32, 6.3 MFLOP) splits over two threads, its 8x8
// attention convolutions (64 into 64, 0.5 MFLOP) stay on one.
constexpr int64_t kThreadFlops = 4000000;

// Output channels oc0 .. oc0 + 16 n16 of pixels p0 .. p0 + rows, straight
// into y; then the bias, then res (each or both may be null), as an add
// after the convolution would give.
template <int L>
DDPM_INLINE void pointwise_block(const float* x, const float* WT, const float* bias, const float* res, float* y,
                                 int64_t C, int64_t OC, int64_t p0, int64_t rows, int64_t oc0, int n16) {
  const int64_t at = p0 * OC + oc0;  // the block's first output
  ddpm::products<L>(n16, rows, x + p0 * C, C, WT + oc0, OC, y + at, OC);
  ddpm::add_bias_residual<L>(y + at, OC, rows, 16 * n16, bias != nullptr ? bias + oc0 : nullptr,
                             res != nullptr ? res + at : nullptr);
}

#define DDPM_BLOCK_ARGS                                                                                      \
  const float *x, const float *WT, const float *bias, const float *res, float *y, int64_t C, int64_t OC,        \
      int64_t p0, int64_t rows, int64_t oc0, int n16
__attribute__((target("arch=x86-64-v4"))) void pointwise_block_avx512(DDPM_BLOCK_ARGS) {
  pointwise_block<16>(x, WT, bias, res, y, C, OC, p0, rows, oc0, n16);
}
__attribute__((target("arch=x86-64-v3"))) void pointwise_block_avx2(DDPM_BLOCK_ARGS) {
  pointwise_block<8>(x, WT, bias, res, y, C, OC, p0, rows, oc0, n16);
}
#undef DDPM_BLOCK_ARGS

#endif  // DDPM_LANES

}  // namespace

namespace ddpm {

bool pointwise_conv_takes(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, const int64_t* stride,
                          const int64_t* padding, const int64_t* dilation, int64_t groups) {
  return vector_conv_takes(x, w, bias, stride, padding, dilation, groups, 1, 0, true);
}

at::Tensor pointwise_conv(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, const at::Tensor& res) {
#if DDPM_LANES
  const int isa = vector_isa();
  TORCH_CHECK(isa != DDPM_VECTORS_NONE, "pointwise_conv: this CPU has neither AVX-512 nor AVX2");
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), OC = w.size(0);
  const at::Tensor WT = derived_weight(w, WeightForm::kPointwise, C * OC * 4, pointwise_weight);
  if (!WT.defined()) return WT;  // over the weight cache's limit: libtorch's convolution
  RECORD_FUNCTION("ddpm::pointwise_conv", std::vector<c10::IValue>({x}));
  at::Tensor y = at::empty({N, OC, H, W}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  const int64_t P = N * H * W;
  if (P == 0) return y;
  const int64_t blocks = divup(P, kBlockRows), groups = divup(OC, kGemmColumns);
  const int64_t unit_flops = 2 * kBlockRows * C * std::min(OC, kGemmColumns);
  const float* xp = x.data_ptr<float>();
  const float* wp = WT.data_ptr<float>();
  const float* bp = bias.defined() ? bias.data_ptr<float>() : nullptr;
  const float* rp = res.defined() ? res.data_ptr<float>() : nullptr;
  float* yp = y.data_ptr<float>();
  at::parallel_for(0, blocks * groups, divup(kThreadFlops, unit_flops), [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) {
      const int64_t p0 = i / groups * kBlockRows, oc0 = i % groups * kGemmColumns;
      const int n16 = static_cast<int>((std::min(OC, oc0 + kGemmColumns) - oc0) / 16);
      (isa == DDPM_VECTORS_AVX512 ? pointwise_block_avx512 : pointwise_block_avx2)(
          xp, wp, bp, rp, yp, C, OC, p0, std::min(kBlockRows, P - p0), oc0, n16);
    }
  });
  return y;
#else
  TORCH_CHECK(false, "pointwise_conv: not built for this CPU");
#endif
}

}  // namespace ddpm
