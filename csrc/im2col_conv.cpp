// im2col_conv.cpp: 3x3 convolutions with stride 1 or 2 and padding 1 that
// the Winograd kernel does not take (a U-Net's downsampling convolutions,
// stride 2; its first convolution, from the image's few channels), into
// channels in sixteens, of channels-last float32 maps on CPUs with AVX-512
// or AVX2, for inference.
//
// A block of output pixels gathers its 3x3 patches of input pixels (zero
// outside the map) into rows of 9 C values (tap by tap, channels within),
// and the patches times the weight (9 C x OC, kept by the weight cache) are
// one matrix product, in the register-blocked kernel of the Winograd and
// 1x1 kernels (lanes_gemm.h), each block's products written straight into
// the output, then the bias. libtorch sends these to oneDNN, or at batch 1
// to its own im2col and GEMM, which takes a layout copy each way for a
// channels-last map. BenchmarkIm2colConvShapes (package torch, one run):
// 0.11-0.7 of libtorch's time at batch 1 on two threads (one request's;
// 1.15 for the cifar10 preset's 128 channels at 32x32), 0.61-1.10 at batch
// 8 on one (a serving worker's), about the same at 64 on two; the small
// preset's forward 0.93-0.98 of the time (BenchmarkIm2colConv in package
// unet). Each value is summed over its taps and channels in
// order, so an image's values depend neither on the batch around it, nor
// on the thread count, nor on the vectors. With autograd, under autocast,
// in other dtypes, layouts or shapes, on other devices and CPUs libtorch's
// convolution runs, and torch's SetIm2colConv(false) chooses it everywhere.
#include <algorithm>
#include <vector>

#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include "lanes_gemm.h"
#include "shim.h"

using ddpm::divup;

namespace {

// The weight (OC, C, 3, 3) as the product's right-hand matrix: (3, 3, C,
// OC), row (ky 3 + kx) C + c, as the gathered patches hold their values.
at::Tensor im2col_weight(const at::Tensor& w) {
  return w.permute({2, 3, 1, 0}).reshape({9 * w.size(1), w.size(0)}).contiguous();
}

#if DDPM_LANES

constexpr int64_t kBlockPixels = 48;  // output pixels a unit of work takes
// The least work a thread takes, in flops: one image's downsampling from
// 32x32 (32 channels into 32, 4.7 MFLOP) stays on one thread.
constexpr int64_t kThreadFlops = 10000000;

// The 3x3 patches of output pixels p0 .. p0 + rows of image-major pixels
// (N, OH, OW) into A (rows x 9 C), zero outside the map; CC is C where it
// is known when compiled (an image's 1 or 3 channels: their copies of a
// float or three a tap, as loops over a C known only at run time, took
// longer than the products), else 0.
template <int CC>
DDPM_INLINE void gather_patches(const float* x, int64_t H, int64_t W, int64_t C, int64_t OH, int64_t OW,
                                int64_t stride, int64_t p0, int64_t rows, float* A) {
  if constexpr (CC > 0) C = CC;
  const int64_t K = 9 * C;
  // The first pixel's image, row and column, then counted on.
  int64_t n = p0 / (OH * OW), oy = p0 / OW % OH, ox = p0 % OW;
  for (int64_t r = 0; r < rows; r++) {
    _Pragma("GCC unroll 9") for (int t = 0; t < 9; t++) {
      const int64_t sy = oy * stride + t / 3 - 1, sx = ox * stride + t % 3 - 1;
      float* dst = A + r * K + t * C;
      if (sy < 0 || sy >= H || sx < 0 || sx >= W) {
        for (int64_t c = 0; c < C; c++) dst[c] = 0.f;
      } else {
        const float* src = x + ((n * H + sy) * W + sx) * C;
        for (int64_t c = 0; c < C; c++) dst[c] = src[c];
      }
    }
    if (++ox == OW) {
      ox = 0;
      if (++oy == OH) oy = 0, n++;
    }
  }
}

// Output pixels p0 .. p0 + rows of image-major pixels (N, OH, OW), all OC
// channels, into y: their patches into A, then the products, in groups of
// 64 output channels, then the bias.
template <int L>
DDPM_INLINE void im2col_block(const float* x, const float* WT, const float* bias, float* y, int64_t H, int64_t W,
                              int64_t C, int64_t OH, int64_t OW, int64_t OC, int64_t stride, int64_t p0, int64_t rows,
                              float* A) {
  switch (C) {
    case 1: gather_patches<1>(x, H, W, C, OH, OW, stride, p0, rows, A); break;
    case 3: gather_patches<3>(x, H, W, C, OH, OW, stride, p0, rows, A); break;
    default: gather_patches<0>(x, H, W, C, OH, OW, stride, p0, rows, A); break;
  }
  const int64_t K = 9 * C;
  for (int64_t oc0 = 0; oc0 < OC; oc0 += ddpm::kGemmColumns) {
    const int n16 = static_cast<int>((std::min(OC, oc0 + ddpm::kGemmColumns) - oc0) / 16);
    ddpm::products<L>(n16, rows, A, K, WT + oc0, OC, y + p0 * OC + oc0, OC);
  }
  ddpm::add_bias_residual<L>(y + p0 * OC, OC, rows, OC, bias, nullptr);
}

#define DDPM_BLOCK_ARGS                                                                                      \
  const float *x, const float *WT, const float *bias, float *y, int64_t H, int64_t W, int64_t C, int64_t OH, \
      int64_t OW, int64_t OC, int64_t stride, int64_t p0, int64_t rows, float *A
__attribute__((target("arch=x86-64-v4"))) void im2col_block_avx512(DDPM_BLOCK_ARGS) {
  im2col_block<16>(x, WT, bias, y, H, W, C, OH, OW, OC, stride, p0, rows, A);
}
__attribute__((target("arch=x86-64-v3"))) void im2col_block_avx2(DDPM_BLOCK_ARGS) {
  im2col_block<8>(x, WT, bias, y, H, W, C, OH, OW, OC, stride, p0, rows, A);
}
#undef DDPM_BLOCK_ARGS

#endif  // DDPM_LANES

}  // namespace

namespace ddpm {

bool im2col_conv_takes(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, const int64_t* stride,
                       const int64_t* padding, const int64_t* dilation, int64_t groups) {
  // Stride 1 from channels in sixteens is the Winograd kernel's alone,
  // also where its transform does not fit in the weight cache. An empty map
  // is libtorch's to answer.
  const int64_t one[2] = {1, 1};
  return vector_conv_takes(x, w, bias, one, padding, dilation, groups, 3, 1, true) && stride[1] == stride[0] &&
         (stride[0] == 2 || (stride[0] == 1 && x.size(1) % 16 != 0)) && x.size(2) > 0 && x.size(3) > 0;
}

at::Tensor im2col_conv(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, int64_t stride) {
#if DDPM_LANES
  const int isa = vector_isa();
  TORCH_CHECK(isa != DDPM_VECTORS_NONE, "im2col_conv: this CPU has neither AVX-512 nor AVX2");
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), OC = w.size(0);
  const int64_t OH = (H - 1) / stride + 1, OW = (W - 1) / stride + 1;  // (H + 2 - 3) / stride + 1
  const at::Tensor WT = derived_weight(w, WeightForm::kIm2col, 9 * C * OC * 4, im2col_weight);
  if (!WT.defined()) return WT;  // over the weight cache's limit: libtorch's convolution
  RECORD_FUNCTION("ddpm::im2col_conv", std::vector<c10::IValue>({x}));
  at::Tensor y = at::empty({N, OC, OH, OW}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  const int64_t P = N * OH * OW;
  if (P == 0) return y;
  const int64_t blocks = divup(P, kBlockPixels);
  const int64_t block_flops = 18 * kBlockPixels * C * OC;
  const float* xp = x.data_ptr<float>();
  const float* wp = WT.data_ptr<float>();
  const float* bp = bias.defined() ? bias.data_ptr<float>() : nullptr;
  float* yp = y.data_ptr<float>();
  at::parallel_for(0, blocks, divup(kThreadFlops, block_flops), [&](int64_t b0, int64_t b1) {
    // A block's patches: kept by each thread for the next call.
    thread_local std::vector<float> A;
    if (A.size() < static_cast<size_t>(kBlockPixels * 9 * C)) A.resize(kBlockPixels * 9 * C);
    for (int64_t b = b0; b < b1; b++) {
      const int64_t p0 = b * kBlockPixels;
      (isa == DDPM_VECTORS_AVX512 ? im2col_block_avx512 : im2col_block_avx2)(
          xp, wp, bp, yp, H, W, C, OH, OW, OC, stride, p0, std::min(kBlockPixels, P - p0), A.data());
    }
  });
  return y;
#else
  TORCH_CHECK(false, "im2col_conv: not built for this CPU");
#endif
}

}  // namespace ddpm
