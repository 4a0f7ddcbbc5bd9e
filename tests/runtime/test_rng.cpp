#include "runtime/rng.h"

#include <gtest/gtest.h>

#include <cmath>

namespace elmo {
namespace {

TEST(Rng, StateRoundTripsAndUniformIsInRange) {
  Rng a(42, kRngShuffle);
  for (int i = 0; i < 10; ++i) a.next_u32();
  Rng b(a.state());
  for (int i = 0; i < 100; ++i) {
    const float u = a.uniform();
    EXPECT_EQ(u, b.uniform());
    EXPECT_GE(u, 0.0f);
    EXPECT_LT(u, 1.0f);
  }
  for (int i = 0; i < 1000; ++i) EXPECT_LT(a.below(7), 7u);
}

TEST(Rng, StreamsAreIndependentAndNormalHasUnitVariance) {
  Rng a(42, kRngShuffle), b(42, kRngSampler);
  int same = 0;
  for (int i = 0; i < 1000; ++i) same += a.next_u32() == b.next_u32();
  EXPECT_LT(same, 3);
  Rng n(7, kRngInit);
  double sum = 0, sum2 = 0;
  const int count = 200000;
  for (int i = 0; i < count; ++i) {
    const double x = n.normal();
    sum += x;
    sum2 += x * x;
  }
  EXPECT_NEAR(sum / count, 0.0, 0.01);
  EXPECT_NEAR(sum2 / count, 1.0, 0.02);
  // below(n) is uniform: each of 5 buckets within 3% of 1/5 over 100k draws.
  int buckets[5] = {};
  for (int i = 0; i < 100000; ++i) buckets[n.below(5)]++;
  for (int k : buckets) EXPECT_NEAR(k / 100000.0, 0.2, 0.006);
}

}  // namespace
}  // namespace elmo
