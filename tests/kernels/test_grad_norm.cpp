// Sum of squares: exact on crafted inputs, deterministic whatever the thread count.
#include <gtest/gtest.h>

#include <vector>

#include "kernels/grad_norm.h"
#include "kernels/launchers.h"  // the CPU twin itself, on spans
#include "runtime/parallel.h"
#include "runtime/rng.h"

namespace elmo {
namespace {

TEST(GradNorm, ExactOnSmallIntegers) {
  // 1..n squared sums exactly in double: n(n+1)(2n+1)/6.
  const int64_t n = 10000;
  std::vector<float> a(n);
  for (int64_t e = 0; e < n; ++e) a[e] = static_cast<float>(e + 1);
  std::vector<float> b = {3.0f, -4.0f};
  const FloatSpan spans[] = {{a.data(), n}, {b.data(), 2}, {nullptr, 0}};
  EXPECT_EQ(sum_of_squares_cpu(spans, 3), n * (n + 1.0) * (2 * n + 1.0) / 6.0 + 25.0);
}

TEST(GradNorm, TensorEntryPointSkipsUndefinedAndChecksDtype) {
  Tensor a = Tensor::from_floats({1, 2, 2}, {3});
  EXPECT_EQ(sum_of_squares({a, Tensor(), Tensor::empty({0})}), 9.0);
  EXPECT_EQ(sum_of_squares({}), 0.0);
  EXPECT_THROW(sum_of_squares({Tensor::zeros({2}, DType::kI32)}), Error);
}

TEST(GradNorm, SameBitsForAnyThreadCount) {
  Rng rng(1, 0);
  std::vector<float> a(300001), b(77);
  for (auto& x : a) x = rng.uniform() - 0.5f;
  for (auto& x : b) x = rng.normal();
  const FloatSpan spans[] = {{a.data(), static_cast<int64_t>(a.size())}, {b.data(), 77}};
  const int saved = num_threads();
  set_num_threads(1);
  const double one = sum_of_squares_cpu(spans, 2);
  set_num_threads(4);
  const double four = sum_of_squares_cpu(spans, 2);
  set_num_threads(saved);
  EXPECT_EQ(one, four);
  double reference = 0.0;
  for (float x : a) reference += static_cast<double>(x) * x;
  for (float x : b) reference += static_cast<double>(x) * x;
  // Tolerance: double summation in a different order, relative ~n * 2^-53.
  EXPECT_NEAR(one, reference, 1e-10 * reference);
}

}  // namespace
}  // namespace elmo
