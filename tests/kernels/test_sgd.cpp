// SGD kernels against a double-precision reference; untouched rows stay bitwise unchanged.
#include <gtest/gtest.h>

#include <vector>

#include "kernels/sgd.h"
#include "runtime/rng.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

std::vector<float> random_vector(int64_t n, uint64_t seed) {
  Rng rng(seed, 0);
  std::vector<float> v(n);
  for (auto& x : v) x = rng.uniform() * 2.0f - 1.0f;
  return v;
}

// f32 vs double over 3 steps: two f32 roundings per step on values of order 1.
constexpr float kAtol = 1e-6f, kRtol = 1e-6f;

TEST(Sgd, DenseMatchesDoubleReference) {
  const int64_t n = 200001;
  std::vector<float> p = random_vector(n, 1);
  std::vector<double> ref(p.begin(), p.end());
  for (int step = 0; step < 3; ++step) {
    const std::vector<float> g = random_vector(n, 10 + step);
    const float lr = step == 0 ? 1.0f : 0.5f, scale = step == 1 ? 0.3f : 1.0f;
    sgd_dense(Device::cpu(), p.data(), g.data(), n, lr, scale);
    for (int64_t e = 0; e < n; ++e)
      ref[e] -= static_cast<double>(lr) * (g[e] * static_cast<double>(scale));
  }
  EXPECT_TRUE(testing::all_close(p, std::vector<float>(ref.begin(), ref.end()), kAtol, kRtol));
}

TEST(Sgd, RowsUpdateOnlyTouchedRows) {
  const int64_t rows = 30, dim = 5;
  std::vector<float> table = random_vector(rows * dim, 2);
  const std::vector<float> table0 = table;
  const std::vector<int32_t> ids = {2, 9, 29};
  const std::vector<float> g = random_vector(3 * dim, 3);
  sgd_rows(Device::cpu(), table.data(), dim, ids.data(), g.data(), 3, 0.7f, 0.5f);
  for (int64_t r = 0; r < rows; ++r) {
    int64_t k = -1;
    for (int64_t j = 0; j < 3; ++j)
      if (ids[j] == r) k = j;
    for (int64_t c = 0; c < dim; ++c) {
      const float expected =
          k < 0 ? table0[r * dim + c]
                : static_cast<float>(table0[r * dim + c] - 0.7 * (g[k * dim + c] * 0.5));
      if (k < 0)
        ASSERT_EQ(table[r * dim + c], expected) << "untouched row " << r;
      else
        ASSERT_NEAR(table[r * dim + c], expected, 1e-6) << "row " << r;
    }
  }
}

}  // namespace
}  // namespace elmo
