// Row-major single-precision GEMM on the CPU through OpenBLAS.
//   C[m, n] = alpha * op(A)[m, k] @ op(B)[k, n] + beta * C
// op(X) = X or X^T; lda/ldb/ldc are row strides of the matrices as stored.
#pragma once

#include <cstdint>

namespace elmo {

void cpu_gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
              const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
              int64_t ldc);

}  // namespace elmo
