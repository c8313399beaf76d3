// lanes_gemm.h: C = A B for row-major float32 matrices with B at most 64
// columns wide, in multiples of 16: the register-blocked kernel of the
// Winograd convolution's products (winograd_conv.cpp) and of the 1x1
// convolution (pointwise_conv.cpp). Each value of C is summed over k in
// order, in registers, so a row's values depend on no other row, nor on the
// vectors' width: batches and CPUs give the same bits.
#pragma once

#include "lanes.h"

namespace ddpm {

constexpr int64_t kGemmRows = 12;     // products take rows in multiples of this (every kernel's R divides it)
constexpr int64_t kGemmColumns = 64;  // the most columns of B one call covers

}  // namespace ddpm

#if DDPM_LANES

namespace ddpm {

// C (R x L NV, row stride ldc) = A (R x K, row stride lda) B (K x L NV,
// row stride ldb): R x NV vectors of sums held in registers.
template <int L, int NV, int R>
DDPM_INLINE void product(const float* __restrict A, int64_t lda, const float* __restrict B, int64_t ldb,
                         float* __restrict C, int64_t ldc, int64_t K) {
  using V = Lanes<L>;
  typename V::vec acc[R][NV];
  _Pragma("GCC unroll 16") for (int r = 0; r < R; r++)
      _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) acc[r][v] = typename V::vec{};
  for (int64_t k = 0; k < K; k++) {
    typename V::vec b[NV];
    _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) b[v] = V::load(B + k * ldb + L * v);
    _Pragma("GCC unroll 16") for (int r = 0; r < R; r++) {
      const float a = A[r * lda + k];
      _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) acc[r][v] += a * b[v];
    }
  }
  _Pragma("GCC unroll 16") for (int r = 0; r < R; r++)
      _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) V::store(C + r * ldc + L * v, acc[r][v]);
}

// C (rows x 16 n16, row stride ldc) = A (rows x K, row stride K) B (K x
// 16 n16, row stride ldb), rows a multiple of kGemmRows, n16 from 1 to 4:
// with AVX-512's 32 registers up to 4 vectors by 6 rows at a time, with
// AVX2's 16 two vectors by 6 rows.
template <int L>
DDPM_INLINE void products(int n16, int64_t rows, const float* A, int64_t K, const float* B, int64_t ldb, float* C,
                          int64_t ldc) {
  if constexpr (L == 16) {
    for (int64_t r = 0; r < rows;) {
      switch (n16) {
        case 4: product<16, 4, 6>(A + r * K, K, B, ldb, C + r * ldc, ldc, K), r += 6; break;
        case 3: product<16, 3, 6>(A + r * K, K, B, ldb, C + r * ldc, ldc, K), r += 6; break;
        case 2: product<16, 2, 12>(A + r * K, K, B, ldb, C + r * ldc, ldc, K), r += 12; break;
        default: product<16, 1, 12>(A + r * K, K, B, ldb, C + r * ldc, ldc, K), r += 12; break;
      }
    }
  } else {
    for (int s = 0; s < n16; s++)
      for (int64_t r = 0; r < rows; r += 6)
        product<L, 16 / L, 6>(A + r * K, K, B + 16 * s, ldb, C + r * ldc + 16 * s, ldc, K);
  }
}

}  // namespace ddpm

#endif  // DDPM_LANES
