#include "runtime/cpu_blas.h"

#include <gtest/gtest.h>

#include <cmath>
#include <tuple>
#include <vector>

#include "runtime/parallel.h"
#include "runtime/rng.h"

namespace elmo {
namespace {

TEST(CpuBlas, GemmTransposes) {
  // A [2, 3], B [3, 2]
  const float a[] = {1, 2, 3, 4, 5, 6};
  const float b[] = {1, 0, 0, 1, 1, 1};
  float c[4] = {1, 1, 1, 1};
  cpu_gemm(false, false, 2, 2, 3, 1.0f, a, 3, b, 2, 1.0f, c, 2);
  EXPECT_FLOAT_EQ(c[0], 1 + 1 + 3);
  EXPECT_FLOAT_EQ(c[1], 1 + 2 + 3);
  EXPECT_FLOAT_EQ(c[2], 1 + 4 + 6);
  EXPECT_FLOAT_EQ(c[3], 1 + 5 + 6);
  // A^T B^T with A stored [3, 2] and B stored [2, 3]: (A^T)[2,3] (B^T)[3,2]
  float d[4] = {0, 0, 0, 0};
  cpu_gemm(true, true, 2, 2, 3, 1.0f, a, 2, a, 3, 0.0f, d, 2);
  // A stored [3,2] = [[1,2],[3,4],[5,6]] -> A^T = [[1,3,5],[2,4,6]]
  // B stored [2,3] = [[1,2,3],[4,5,6]] -> B^T = [[1,4],[2,5],[3,6]]
  EXPECT_FLOAT_EQ(d[0], 1 * 1 + 3 * 2 + 5 * 3);
  EXPECT_FLOAT_EQ(d[3], 2 * 4 + 4 * 5 + 6 * 6);
}

// Large products are split over threads (by rows or by columns). The split changes which
// OpenBLAS micro-kernel edge path computes an element, so results may differ in the last bit
// from one single-threaded call (tolerance 1e-5 relative: float rounding of K = 500 sums), but
// the same thread count always gives the same bits (run-to-run determinism).
TEST(CpuBlas, ThreadedSplitsMatchOneCall) {
  Rng rng(3, 1);
  for (const auto& [m, n, k, ta, tb] : std::vector<std::tuple<int, int, int, bool, bool>>{
           {300, 40, 500, false, false}, {40, 300, 500, false, true},
           {257, 129, 300, true, false}, {129, 257, 300, true, true}}) {
    std::vector<float> a(m * k), b(k * n), c1(m * n, 0.5f), c2(m * n, 0.5f);
    for (float& x : a) x = rng.uniform() - 0.5f;
    for (float& x : b) x = rng.uniform() - 0.5f;
    const int lda = ta ? m : k, ldb = tb ? k : n;
    set_num_threads(1);
    cpu_gemm(ta, tb, m, n, k, 1.0f, a.data(), lda, b.data(), ldb, 0.25f, c1.data(), n);
    set_num_threads(2);
    cpu_gemm(ta, tb, m, n, k, 1.0f, a.data(), lda, b.data(), ldb, 0.25f, c2.data(), n);
    std::vector<float> c3(m * n, 0.5f);
    cpu_gemm(ta, tb, m, n, k, 1.0f, a.data(), lda, b.data(), ldb, 0.25f, c3.data(), n);
    EXPECT_EQ(c2, c3) << "not deterministic for a fixed thread count";
    for (int i = 0; i < m * n; ++i)
      ASSERT_NEAR(c1[i], c2[i], 1e-5f * (1.0f + std::fabs(c1[i]))) << i << " of " << m << "x" << n;
  }
  set_num_threads(0);
}

}  // namespace
}  // namespace elmo
