#include "runtime/cpu_blas.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>

#include "runtime/parallel.h"

namespace elmo {

namespace {
void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
           const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
           int64_t ldc) {
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, static_cast<blasint>(m),
              static_cast<blasint>(n), static_cast<blasint>(k), alpha, a,
              static_cast<blasint>(lda), b, static_cast<blasint>(ldb), beta, c,
              static_cast<blasint>(ldc));
}
}  // namespace

void cpu_gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
              const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
              int64_t ldc) {
  if (m == 0 || n == 0) return;
  // Small products, or callers already inside a parallel region: one call on this thread.
  const double flops = 2.0 * m * n * k;
  const int threads = num_threads();
  if (threads <= 1 || flops < 4e6 || omp_in_parallel()) {
    sgemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  // Split the larger output dimension into contiguous blocks (multiples of 16 for the kernels).
  const bool split_rows = m >= n;
  const int64_t extent = split_rows ? m : n;
  const int64_t grain = std::max<int64_t>(16, (extent / threads + 15) / 16 * 16);
  parallel_for(extent, grain, [&](int64_t begin, int64_t end) {
    if (split_rows) {
      // rows [begin, end) of op(A) and C
      const float* a_part = trans_a ? a + begin : a + begin * lda;
      sgemm(trans_a, trans_b, end - begin, n, k, alpha, a_part, lda, b, ldb, beta,
            c + begin * ldc, ldc);
    } else {
      // columns [begin, end) of op(B) and C
      const float* b_part = trans_b ? b + begin * ldb : b + begin;
      sgemm(trans_a, trans_b, m, end - begin, k, alpha, a, lda, b_part, ldb, beta, c + begin,
            ldc);
    }
  });
}

}  // namespace elmo
