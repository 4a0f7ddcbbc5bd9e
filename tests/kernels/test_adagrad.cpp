// Adagrad kernels against a double-precision reference over several steps; untouched rows
// (and their accumulators) stay bitwise unchanged.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/adagrad.h"
#include "runtime/rng.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

std::vector<float> random_vector(int64_t n, uint64_t seed, float scale = 1.0f) {
  Rng rng(seed, 0);
  std::vector<float> v(n);
  for (auto& x : v) x = (rng.uniform() * 2.0f - 1.0f) * scale;
  return v;
}

void reference_step(std::vector<double>& p, std::vector<double>& acc, const std::vector<float>& g,
                    double lr, double eps, double scale) {
  for (size_t e = 0; e < p.size(); ++e) {
    const double gs = g[e] * scale;
    acc[e] += gs * gs;
    p[e] -= lr * gs / (std::sqrt(acc[e]) + eps);
  }
}

// f32 vs double over 5 steps: a few f32 roundings per step on values of order 1.
constexpr float kAtol = 1e-6f, kRtol = 1e-5f;

TEST(Adagrad, DenseMatchesDoubleReference) {
  const int64_t n = 100003;  // several threads' chunks plus a tail
  std::vector<float> p = random_vector(n, 1), acc(n, 1.0f);
  std::vector<double> ref_p(p.begin(), p.end()), ref_acc(n, 1.0);
  for (int step = 0; step < 5; ++step) {
    const std::vector<float> g = random_vector(n, 100 + step, 3.0f);
    const float scale = step == 2 ? 0.5f : 1.0f;
    adagrad_dense(Device::cpu(), p.data(), acc.data(), g.data(), n, 0.2f, 1e-7f, scale);
    reference_step(ref_p, ref_acc, g, 0.2, 1e-7, scale);
  }
  std::vector<float> rp(ref_p.begin(), ref_p.end()), racc(ref_acc.begin(), ref_acc.end());
  EXPECT_TRUE(testing::all_close(p, rp, kAtol, kRtol));
  EXPECT_TRUE(testing::all_close(acc, racc, kAtol, kRtol));
}

TEST(Adagrad, RowsUpdateOnlyTouchedRows) {
  const int64_t rows = 50, dim = 7;
  std::vector<float> table = random_vector(rows * dim, 2), acc(rows * dim);
  for (int64_t e = 0; e < rows * dim; ++e) acc[e] = 1.0f + 0.01f * static_cast<float>(e % 13);
  const std::vector<float> table0 = table, acc0 = acc;
  std::vector<double> ref_t(table.begin(), table.end()), ref_acc(acc.begin(), acc.end());
  const std::vector<std::vector<int32_t>> steps = {{0, 3, 17, 49}, {3, 4}, {17, 18, 30}};
  std::vector<bool> touched(rows, false);
  for (size_t s = 0; s < steps.size(); ++s) {
    const auto& ids = steps[s];
    const int64_t n_ids = static_cast<int64_t>(ids.size());
    const std::vector<float> g = random_vector(n_ids * dim, 200 + s, 2.0f);
    adagrad_rows(Device::cpu(), table.data(), acc.data(), dim, ids.data(), g.data(), n_ids, 0.1f,
                 1e-6f, 0.75f);
    for (int64_t k = 0; k < n_ids; ++k) {
      touched[ids[k]] = true;
      for (int64_t c = 0; c < dim; ++c) {
        const int64_t at = ids[k] * dim + c;
        const double gs = g[k * dim + c] * 0.75;
        ref_acc[at] += gs * gs;
        ref_t[at] -= 0.1 * gs / (std::sqrt(ref_acc[at]) + 1e-6);
      }
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t at = r * dim;
    if (!touched[r]) {
      EXPECT_EQ(0, std::memcmp(&table[at], &table0[at], dim * sizeof(float))) << "row " << r;
      EXPECT_EQ(0, std::memcmp(&acc[at], &acc0[at], dim * sizeof(float))) << "acc row " << r;
    }
  }
  std::vector<float> rt(ref_t.begin(), ref_t.end()), racc(ref_acc.begin(), ref_acc.end());
  EXPECT_TRUE(testing::all_close(table, rt, kAtol, kRtol));
  EXPECT_TRUE(testing::all_close(acc, racc, kAtol, kRtol));
}

TEST(Adagrad, RowsWithManyIdsUseThreads) {
  const int64_t rows = 20000, dim = 16;
  std::vector<float> table = random_vector(rows * dim, 3), acc(rows * dim, 1.0f);
  std::vector<double> ref_t(table.begin(), table.end()), ref_acc(acc.begin(), acc.end());
  std::vector<int32_t> ids;
  for (int32_t r = 1; r < rows; r += 2) ids.push_back(r);  // every odd row
  const int64_t n_ids = static_cast<int64_t>(ids.size());
  const std::vector<float> g = random_vector(n_ids * dim, 4);
  adagrad_rows(Device::cpu(), table.data(), acc.data(), dim, ids.data(), g.data(), n_ids, 0.2f,
               1e-7f, 1.0f);
  for (int64_t k = 0; k < n_ids; ++k)
    for (int64_t c = 0; c < dim; ++c) {
      const int64_t at = ids[k] * dim + c;
      ref_acc[at] += static_cast<double>(g[k * dim + c]) * g[k * dim + c];
      ref_t[at] -= 0.2 * g[k * dim + c] / (std::sqrt(ref_acc[at]) + 1e-7);
    }
  std::vector<float> rt(ref_t.begin(), ref_t.end()), racc(ref_acc.begin(), ref_acc.end());
  EXPECT_TRUE(testing::all_close(table, rt, kAtol, kRtol));
  EXPECT_TRUE(testing::all_close(acc, racc, kAtol, kRtol));
  for (int64_t r = 0; r < rows; r += 2) ASSERT_EQ(acc[r * dim], 1.0f) << "even row " << r;
}

}  // namespace
}  // namespace elmo
