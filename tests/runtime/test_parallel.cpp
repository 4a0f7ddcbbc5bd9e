#include "runtime/parallel.h"

#include <gtest/gtest.h>

#include <atomic>
#include <vector>

#include "runtime/cpu_blas.h"

namespace elmo {
namespace {

TEST(Parallel, CoversEveryIndexOnce) {
  std::vector<int> hits(1003, 0);
  parallel_for(1003, 10, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) hits[i]++;
  });
  for (int h : hits) EXPECT_EQ(h, 1);
}

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

}  // namespace
}  // namespace elmo
