// lanes_gemm.h: C = A B for row-major float32 matrices with B at most 64
// columns wide, in multiples of 16: the register-blocked kernel of the
// Winograd convolution's products (winograd_conv.cpp) and of the 1x1
// convolution (pointwise_conv.cpp). Each value of C is summed over k in
// order, in registers, so a row's values depend on no other row, nor on the
// vectors' width: batches and CPUs give the same bits.
#pragma once

#include "lanes.h"

namespace ddpm {

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

// The last 0 to R rows of a product, in product<L, NV, rows> (nothing for
// none).
template <int L, int NV, int R>
DDPM_INLINE void last_rows(int64_t rows, const float* A, int64_t lda, const float* B, int64_t ldb, float* C,
                           int64_t ldc, int64_t K) {
  if constexpr (R > 0) {
    if (rows == R) {
      product<L, NV, R>(A, lda, B, ldb, C, ldc, K);
    } else {
      last_rows<L, NV, R - 1>(rows, A, lda, B, ldb, C, ldc, K);
    }
  }
}

// C (rows x L NV) = A (rows x K, row stride K) B: R rows at a time, then
// the rest in one product of their own, so that no row is computed that
// is not wanted (one image's 4x4 map is one Winograd tile: with the rows
// rounded up to 12, eleven twelfths of its products were waste).
template <int L, int NV, int R>
DDPM_INLINE void row_products(int64_t rows, const float* A, int64_t K, const float* B, int64_t ldb, float* C,
                              int64_t ldc) {
  int64_t r = 0;
  for (; r + R <= rows; r += R) product<L, NV, R>(A + r * K, K, B, ldb, C + r * ldc, ldc, K);
  last_rows<L, NV, R - 1>(rows - r, A + r * K, K, B, ldb, C + r * ldc, ldc, K);
}

// C (rows x 16 n16, row stride ldc) = A (rows x K, row stride K) B (K x
// 16 n16, row stride ldb), any number of rows, n16 from 1 to 4: with
// AVX-512's 32 registers up to 4 vectors by 6 rows at a time, with AVX2's
// 16 two vectors by 6 rows.
template <int L>
DDPM_INLINE void products(int n16, int64_t rows, const float* A, int64_t K, const float* B, int64_t ldb, float* C,
                          int64_t ldc) {
  if constexpr (L == 16) {
    switch (n16) {
      case 4: row_products<16, 4, 6>(rows, A, K, B, ldb, C, ldc); break;
      case 3: row_products<16, 3, 6>(rows, A, K, B, ldb, C, ldc); break;
      case 2: row_products<16, 2, 12>(rows, A, K, B, ldb, C, ldc); break;
      default: row_products<16, 1, 12>(rows, A, K, B, ldb, C, ldc); break;
    }
  } else {
    for (int s = 0; s < n16; s++) row_products<L, 16 / L, 6>(rows, A, K, B + 16 * s, ldb, C + 16 * s, ldc);
  }
}

// y[r, c] + bias[c], then + res[r, c], into y for rows x cols values (cols
// a multiple of L) whose rows lie ld floats apart in y and res alike: what
// adds after the product would give. Either or both may be null.
template <int L>
DDPM_INLINE void add_bias_residual(float* y, int64_t ld, int64_t rows, int64_t cols, const float* bias,
                                   const float* res) {
  using V = Lanes<L>;
  for (int64_t r = 0; (bias != nullptr || res != nullptr) && r < rows; r++)
    for (int64_t c = 0; c < cols; c += L) {
      typename V::vec v = V::load(y + r * ld + c);
      if (bias != nullptr) v = v + V::load(bias + c);
      if (res != nullptr) v = v + V::load(res + r * ld + c);
      V::store(y + r * ld + c, v);
    }
}

}  // namespace ddpm

#endif  // DDPM_LANES
