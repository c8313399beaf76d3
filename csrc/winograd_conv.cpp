// winograd_conv.cpp: 3x3 convolutions (stride 1, padding 1) by Winograd's
// minimal filtering F(4x4, 3x3), for inference on CPUs with AVX-512 or AVX2.
//
// Each 4x4 tile of the output comes from a 6x6 patch of the input:
// Y = A^T [(G g G^T) . (B^T d B)] A (Lavin and Gray, "Fast Algorithms for
// Convolutional Neural Networks", 2016, with the points 0, 1, -1, 2, -2 and
// infinity), 36 multiplications per tile, channel pair and output channel
// where the direct convolution takes 144. The weight's transform U = G g G^T
// is computed once per weight and kept (weight_cache.cpp); a call
// transforms the input patches of a block of tiles (channels-last, so the
// transforms run on 16 channels at once), multiplies them by U in 36 small
// matrix products of the shim's own register-blocked kernel, and
// transforms the products back into the output with the bias.
//
// Against libtorch's convolution (oneDNN's direct kernels), the small
// preset's 3x3 convolutions took 0.26-0.52 of the time at batch 8 on one
// thread (a serving worker's) and 0.14-0.46 at batch 1 on two (one
// request's; BenchmarkWinogradConvShapes in package torch, two runs), its
// sampling forward 0.65-0.70 / 0.67-0.75 / 0.65-0.69 of the time at batch 8
// on one thread / batch 1 on two / batch 64 on two (BenchmarkWinogradConv
// in package unet, the two taking turns, two runs). With AVX2's vectors
// (on a CPU without AVX-512) against oneDNN held to AVX2 as well
// (DNNL_MAX_CPU_ISA=AVX2): 0.30-0.42 at batch 8 on one thread, 0.28-0.74
// at batch 1 on two. The price is
// precision: 3e-7 to 1.5e-6 relative L2 error against a float64
// convolution, where oneDNN's is 2e-7 to 6e-7 (TestWinogradConv measures
// the error against the size of the terms summed instead: 6e-8 to
// 1.4e-7), far under what a sampled image can show (8-bit pixels): 50 DDIM steps of the small
// preset end 2.8e-7 from PyTorch's samples. Every tile is computed on its
// own, its sums in a fixed order, so an image's values depend neither on
// the batch around it, nor on the thread count, nor on the vectors. With
// autograd, under autocast, in other dtypes or layouts, on other devices
// or CPUs without AVX-512 or AVX2 libtorch's convolution runs; torch's SetWinogradConv(false)
// chooses it everywhere. The transforms take four times a weight's memory;
// beyond the weight cache's limit (weight_cache.cpp) libtorch's convolution
// runs too.
#include <algorithm>
#include <vector>

#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include "lanes_gemm.h"
#include "shim.h"

using ddpm::divup;

namespace {

// The weight's transform U of w (OC, IC, 3, 3), computed in double, (G g
// G^T)[i][j] for each (input, output) channel, in groups of the products'
// kGemmColumns output channels: the group of oc0 .. oc0 + width at U + 36
// IC oc0, (36, IC, width) there, so that its products read their part of
// U in one piece (as one (36, IC, OC) tensor, rows of OC, the products of
// 128 and 256 output channels took 1.06-1.2 times as long).
at::Tensor winograd_weight(const at::Tensor& w) {
  static const double G[6][3] = {{1. / 4, 0, 0},          {-1. / 6, -1. / 6, -1. / 6}, {-1. / 6, 1. / 6, -1. / 6},
                                 {1. / 24, 1. / 12, 1. / 6}, {1. / 24, -1. / 12, 1. / 6}, {0, 0, 1}};
  const int64_t OC = w.size(0), IC = w.size(1);
  const at::Tensor wd = w.to(at::kDouble).contiguous();
  at::Tensor U = at::empty({36 * IC * OC}, w.options());
  const double* g = wd.data_ptr<double>();
  float* u = U.data_ptr<float>();
  for (int64_t o = 0; o < OC; o++)
    for (int64_t i = 0; i < IC; i++) {
      const double* k = g + (o * IC + i) * 9;
      double t[6][3];  // G g
      for (int a = 0; a < 6; a++)
        for (int c = 0; c < 3; c++) t[a][c] = G[a][0] * k[c] + G[a][1] * k[3 + c] + G[a][2] * k[6 + c];
      const int64_t oc0 = o / ddpm::kGemmColumns * ddpm::kGemmColumns, width = std::min(OC - oc0, ddpm::kGemmColumns);
      float* group = u + 36 * IC * oc0;
      for (int a = 0; a < 6; a++)
        for (int b = 0; b < 6; b++)
          group[((a * 6 + b) * IC + i) * width + o - oc0] =
              static_cast<float>(t[a][0] * G[b][0] + t[a][1] * G[b][1] + t[a][2] * G[b][2]);
    }
  return U;
}

#if DDPM_LANES

using ddpm::Lanes;

// The kernel is written once for vectors of L floats (lanes.h) and
// compiled twice, inlined into an AVX-512 entry (L = 16) and an AVX2 entry
// (L = 8); both sum every value in the same order, so they give the same
// bits.
constexpr int64_t kColumns = ddpm::kGemmColumns;  // output channels a block's products cover at once
constexpr int64_t kThreadFlops = 10000000;  // the least work a thread takes, in the products' flops

// The distance in floats between two of the 36 points' slices of a block's
// buffers (V and M), each rows x width: one cache line more than the slice,
// so that a tile's 36 values, one in each slice, fall in different sets of
// the L1 cache. Without it, slices of 36 rows of 128 channels lie 18 KiB
// apart, all 36 values of a tile in 2 of the 64 sets: the input transform
// of 128 channels took 3.2 times as long.
DDPM_INLINE int64_t slice_stride(int64_t rows, int64_t width) { return rows * width + 16; }

// r = B^T d for six vectors d0..d5.
template <class T>
DDPM_INLINE void input_points(T d0, T d1, T d2, T d3, T d4, T d5, T* r) {
  r[0] = 4.f * d0 - 5.f * d2 + d4;
  r[1] = d3 + d4 - 4.f * (d1 + d2);
  r[2] = 4.f * (d1 - d2) - d3 + d4;
  r[3] = 2.f * (d3 - d1) - d2 + d4;
  r[4] = 2.f * (d1 - d3) - d2 + d4;
  r[5] = 4.f * d1 - 5.f * d3 + d5;
}

// o = A^T m for six vectors m0..m5.
template <class T>
DDPM_INLINE void output_points(T m0, T m1, T m2, T m3, T m4, T m5, T* o) {
  o[0] = m0 + m1 + m2 + m3 + m4;
  o[1] = m1 - m2 + 2.f * (m3 - m4);
  o[2] = m1 + m2 + 4.f * (m3 + m4);
  o[3] = m1 - m2 + 8.f * (m3 - m4) + m5;
}

// V[p * vstride + c] = (B^T d B)[p] for the 6x6 patch d whose top left
// pixel is (y0, x0) of a channels-last map (H, W, C), zero outside it
// (read from zeros, C zero floats). The map is x (H / up, W / up, C)
// repeated up times along each axis (nearest-neighbour upsampling), read
// where it lies.
template <int L>
DDPM_INLINE void transform_input(const float* x, int64_t H, int64_t W, int64_t up, int64_t C, int64_t y0,
                                 int64_t x0, const float* zeros, float* V, int64_t vstride) {
  using Vec = Lanes<L>;
  const float* pixel[6][6];
  for (int i = 0; i < 6; i++)
    for (int j = 0; j < 6; j++) {
      const int64_t y = y0 + i, xx = x0 + j;
      if (y < 0 || y >= H || xx < 0 || xx >= W) {
        pixel[i][j] = zeros;
      } else {
        pixel[i][j] = up == 1 ? x + (y * W + xx) * C : x + (y / up * (W / up) + xx / up) * C;
      }
    }
  for (int64_t c = 0; c < C; c += L) {
    typename Vec::vec t[6][6];  // B^T d
    for (int j = 0; j < 6; j++) {
      typename Vec::vec r[6];
      input_points(Vec::load(pixel[0][j] + c), Vec::load(pixel[1][j] + c), Vec::load(pixel[2][j] + c),
                   Vec::load(pixel[3][j] + c), Vec::load(pixel[4][j] + c), Vec::load(pixel[5][j] + c), r);
      for (int i = 0; i < 6; i++) t[i][j] = r[i];
    }
    for (int i = 0; i < 6; i++) {
      typename Vec::vec r[6];
      input_points(t[i][0], t[i][1], t[i][2], t[i][3], t[i][4], t[i][5], r);
      for (int j = 0; j < 6; j++) Vec::store(V + (i * 6 + j) * vstride + c, r[j]);
    }
  }
}

// The 4x4 output tile at (y0, x0) of a channels-last map (H, W, OC), 16 n16
// channels of it, from the products M[p * mstride] and the bias (or none),
// plus the same tile of res (or nothing) after the bias, as an add after
// the convolution would give.
template <int L>
DDPM_INLINE void transform_output(const float* M, int64_t mstride, int n16, const float* bias, const float* res,
                                  float* y, int64_t H, int64_t W, int64_t OC, int64_t y0, int64_t x0) {
  using Vec = Lanes<L>;
  for (int v = 0; v < n16 * 16 / L; v++) {
    // A^T m, a column of products at a time: loading all 36 first held more
    // vectors than there are registers, and the output transform took 1.5
    // times as long.
    typename Vec::vec t[4][6];
    for (int j = 0; j < 6; j++) {
      const float* m = M + j * mstride + L * v;  // (B^T d B . U)[i][j] at m + 6 i mstride
      typename Vec::vec o[4];
      output_points(Vec::load(m), Vec::load(m + 6 * mstride), Vec::load(m + 12 * mstride),
                    Vec::load(m + 18 * mstride), Vec::load(m + 24 * mstride), Vec::load(m + 30 * mstride), o);
      for (int i = 0; i < 4; i++) t[i][j] = o[i];
    }
    const typename Vec::vec b = bias != nullptr ? Vec::load(bias + L * v) : typename Vec::vec{};
    for (int i = 0; i < 4 && y0 + i < H; i++) {
      typename Vec::vec o[4];
      output_points(t[i][0], t[i][1], t[i][2], t[i][3], t[i][4], t[i][5], o);
      for (int j = 0; j < 4 && x0 + j < W; j++) {
        const int64_t at = ((y0 + i) * W + x0 + j) * OC + L * v;
        Vec::store(y + at, res != nullptr ? (o[j] + b) + Vec::load(res + at) : o[j] + b);
      }
    }
  }
}

// Output channels oc0 .. oc1 (a multiple of 16 apart, at most kColumns) of
// tiles t0 .. t0 + nt of the output, one row of the products each, with the
// thread's buffers V (36 x slice_stride(nt, C)) and M (36 x slice_stride(nt,
// 64)) and C zero floats. The block's input transforms go
// into V first unless V holds them already (fresh false: the same block's
// other channels came before on this thread).
template <int L>
DDPM_INLINE void convolve_block(const float* x, const float* U, const float* bias, const float* res, float* y,
                                int64_t H, int64_t W, int64_t up, int64_t C, int64_t OC, int64_t t0, int64_t nt, int64_t oc0,
                                int64_t oc1, bool fresh, const float* zeros, float* V, float* M) {
  const int64_t tH = divup(H, 4), tW = divup(W, 4), vs = slice_stride(nt, C), ms = slice_stride(nt, kColumns);
  for (int64_t r = 0; fresh && r < nt; r++) {
    const int64_t t = t0 + r, n = t / (tH * tW), ty = t / tW % tH, tx = t % tW;
    transform_input<L>(x + n * (H / up) * (W / up) * C, H, W, up, C, 4 * ty - 1, 4 * tx - 1, zeros, V + r * C, vs);
  }
  const int64_t width = oc1 - oc0;
  const int n16 = static_cast<int>(width / 16);
  const float* Ug = U + 36 * C * oc0;  // the group's (36, C, width) part of U
  for (int p = 0; p < 36; p++)
    ddpm::products<L>(n16, nt, V + p * vs, C, Ug + p * C * width, width, M + p * ms, kColumns);
  for (int64_t r = 0; r < nt; r++) {
    const int64_t t = t0 + r, n = t / (tH * tW), ty = t / tW % tH, tx = t % tW;
    transform_output<L>(M + r * kColumns, ms, n16, bias != nullptr ? bias + oc0 : nullptr,
                        res != nullptr ? res + n * H * W * OC + oc0 : nullptr, y + n * H * W * OC + oc0, H, W, OC,
                        4 * ty, 4 * tx);
  }
}

#define DDPM_BLOCK_ARGS                                                                                          \
  const float *x, const float *U, const float *bias, const float *res, float *y, int64_t H, int64_t W, int64_t up, \
      int64_t C, int64_t OC, int64_t t0, int64_t nt, int64_t oc0, int64_t oc1, bool fresh,                       \
      const float *zeros, float *V, float *M
__attribute__((target("arch=x86-64-v4"))) void convolve_block_avx512(DDPM_BLOCK_ARGS) {
  convolve_block<16>(x, U, bias, res, y, H, W, up, C, OC, t0, nt, oc0, oc1, fresh, zeros, V, M);
}
__attribute__((target("arch=x86-64-v3"))) void convolve_block_avx2(DDPM_BLOCK_ARGS) {
  convolve_block<8>(x, U, bias, res, y, H, W, up, C, OC, t0, nt, oc0, oc1, fresh, zeros, V, M);
}
#undef DDPM_BLOCK_ARGS

#endif  // DDPM_LANES

}  // namespace

namespace ddpm {

bool winograd_conv_takes(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, const int64_t* stride,
                         const int64_t* padding, const int64_t* dilation, int64_t groups) {
  return vector_conv_takes(x, w, bias, stride, padding, dilation, groups, 3, 1, true) && x.size(1) % 16 == 0;
}

at::Tensor winograd_conv(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, const at::Tensor& res,
                         int64_t up) {
#if DDPM_LANES
  const int isa = ddpm::vector_isa();
  TORCH_CHECK(isa != DDPM_VECTORS_NONE, "winograd_conv: this CPU has neither AVX-512 nor AVX2");
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2) * up, W = x.size(3) * up, OC = w.size(0);
  const at::Tensor U = derived_weight(w, WeightForm::kWinograd, 36 * C * OC * 4, winograd_weight);
  if (!U.defined()) return U;  // over the weight cache's limit: libtorch's convolution
  RECORD_FUNCTION("ddpm::winograd_conv", std::vector<c10::IValue>({x}));
  at::Tensor y = at::empty({N, OC, H, W}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  const int64_t tiles = N * divup(H, 4) * divup(W, 4);
  if (tiles == 0) return y;
  // Blocks of at most 36 tiles (their transforms stay in the cache), each
  // in groups of kColumns output channels; a group is a thread's unit of
  // work, and a thread transforms a block's input once for the block's
  // groups it takes in a row. Each thread takes kThreadFlops or more: a
  // block reads all of U, so a smaller share saves little and costs the
  // threads' waking (with this kernel and the GroupNorm kernel spread at
  // every size, the small preset's forward at batch 1 on two threads took
  // 1.1-1.5x the time). Splitting blocks by channels lets one image's wide
  // convolutions, whose few tiles make one block, use every thread: the
  // cifar10 preset's 256 channels at 16x16 and 8x8, batch 1 on two threads,
  // took 0.83-0.88 of the time of one block a thread (BenchmarkWinograd-
  // ConvShapes, the two builds taking turns, two runs); its whole forward
  // there did not change beyond the noise.
  // Blocks are 36 tiles but the last, which has the rest, and the products
  // compute a block's tiles and no more. With a block's rows rounded up to
  // the products' 12, one image's 4x4 and 8x8 maps (one and four tiles)
  // spent most of their products on zeros: 64 channels into 64 at batch 1
  // on two threads now take a third and a half of that time, the small
  // preset's one-image forward 0.80-0.87 (BenchmarkWinogradConvShapes,
  // bin/ddpm bench, the two builds taking turns).
  const int64_t per_block = std::min<int64_t>(tiles, 36);
  const int64_t blocks = divup(tiles, per_block);
  const int64_t groups = divup(OC, kColumns);
  const int64_t group_flops = 72 * per_block * C * std::min(OC, kColumns);
  const int64_t grain = divup(kThreadFlops, group_flops);
  const float* xp = x.data_ptr<float>();
  const float* Up = U.data_ptr<float>();
  const float* bp = bias.defined() ? bias.data_ptr<float>() : nullptr;
  const float* rp = res.defined() ? res.data_ptr<float>() : nullptr;
  float* yp = y.data_ptr<float>();
  at::parallel_for(0, blocks * groups, grain, [&](int64_t i0, int64_t i1) {
    // Each thread keeps its buffers for the next call: 36 x 36 x (C + 64)
    // floats for the widest C it has met (1 MiB at C = 128).
    thread_local std::vector<float> V, M, zeros;
    if (V.size() < static_cast<size_t>(36 * slice_stride(per_block, C))) V.resize(36 * slice_stride(per_block, C));
    if (M.size() < static_cast<size_t>(36 * slice_stride(per_block, kColumns)))
      M.resize(36 * slice_stride(per_block, kColumns));
    if (zeros.size() < static_cast<size_t>(C)) zeros.resize(C);  // only ever read
    for (int64_t i = i0; i < i1; i++) {
      const int64_t b = i / groups, oc0 = i % groups * kColumns, t0 = b * per_block;
      const int64_t nt = std::min(per_block, tiles - t0);
      (isa == DDPM_VECTORS_AVX512 ? convolve_block_avx512 : convolve_block_avx2)(
          xp, Up, bp, rp, yp, H, W, up, C, OC, t0, nt, oc0, std::min(OC, oc0 + kColumns),
          i == i0 || oc0 == 0, zeros.data(), V.data(), M.data());
    }
  });
  return y;
#else
  TORCH_CHECK(false, "winograd_conv: not built for this CPU");
#endif
}

}  // namespace ddpm
