#include "kernels/dropout.h"

#include <gtest/gtest.h>

#include <vector>

namespace elmo {
namespace {

TEST(Dropout, DropsAboutPAndScalesTheRest) {
  const int64_t n = 100000;
  Tensor x = Tensor::empty({n});
  x.fill_(2.0f);
  Tensor y = Tensor::empty({n});
  dropout(x, y, {0.25f, 7, dropout_stream(3, 1)});
  int64_t dropped = 0;
  for (int64_t e = 0; e < n; ++e) {
    const float v = y.data<float>()[e];
    if (v == 0.0f) ++dropped;
    else EXPECT_FLOAT_EQ(v, 2.0f / 0.75f);
  }
  EXPECT_NEAR(static_cast<double>(dropped) / n, 0.25, 0.01);
}

TEST(Dropout, MaskDependsOnlyOnSeedStreamAndIndex) {
  const int64_t n = 4096;
  Tensor x = Tensor::empty({n});
  x.fill_(1.0f);
  Tensor a = Tensor::empty({n}), b = Tensor::empty({n}), c = Tensor::empty({n});
  dropout(x, a, {0.5f, 11, 5});
  dropout(x, b, {0.5f, 11, 5});
  dropout(x, c, {0.5f, 11, 6});
  EXPECT_EQ(a.to_floats(), b.to_floats());
  EXPECT_NE(a.to_floats(), c.to_floats());
  dropout(x, x, {0.5f, 11, 5});  // in place
  EXPECT_EQ(x.to_floats(), a.to_floats());
}

TEST(Dropout, ZeroProbabilityIsIdentityAndBadProbabilityIsAnError) {
  Tensor x = Tensor::from_floats({1, -2, 3}, {3});
  Tensor y = Tensor::empty({3});
  dropout(x, y, {0.0f, 1, 1});
  EXPECT_EQ(y.to_floats(), x.to_floats());
  EXPECT_THROW(dropout(x, y, {1.0f, 1, 1}), Error);
}

}  // namespace
}  // namespace elmo
