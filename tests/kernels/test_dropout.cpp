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
  dropout(x, y, {0.25f, 7, dropout_stream(3, 1), {}});
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
  dropout(x, a, {0.5f, 11, 5, {}});
  dropout(x, b, {0.5f, 11, 5, {}});
  dropout(x, c, {0.5f, 11, 6, {}});
  EXPECT_EQ(a.to_floats(), b.to_floats());
  EXPECT_NE(a.to_floats(), c.to_floats());
  dropout(x, x, {0.5f, 11, 5, {}});  // in place
  EXPECT_EQ(x.to_floats(), a.to_floats());
}

// A rank holding rows [offset, offset + rows) of a time-major [T, global_rows, D] batch must drop
// exactly the elements one rank holding the whole batch drops. D = 7 puts row starts at every
// Philox lane.
TEST(Dropout, RowShardsDropTheElementsOfTheGlobalTensor) {
  const int64_t T = 3, global_rows = 5, D = 7;
  Tensor whole = Tensor::empty({T * global_rows * D});
  for (int64_t e = 0; e < whole.numel(); ++e) whole.data<float>()[e] = 1.0f + e;
  Tensor whole_out = Tensor::empty(whole.shape());
  dropout(whole, whole_out, {0.4f, 21, 8, {}});
  for (const auto& [offset, rows] : {std::pair<int64_t, int64_t>{0, 2}, {2, 3}, {4, 1}}) {
    Tensor part = Tensor::empty({T * rows * D}), expected = Tensor::empty({T * rows * D});
    for (int64_t t = 0; t < T; ++t)
      for (int64_t b = 0; b < rows; ++b)
        for (int64_t d = 0; d < D; ++d) {
          const int64_t local = (t * rows + b) * D + d;
          const int64_t global = (t * global_rows + offset + b) * D + d;
          part.data<float>()[local] = whole.data<float>()[global];
          expected.data<float>()[local] = whole_out.data<float>()[global];
        }
    Tensor out = Tensor::empty(part.shape());
    DropoutParams params{0.4f, 21, 8, {rows, global_rows, offset, D}};
    dropout(part, out, params);
    EXPECT_EQ(out.to_floats(), expected.to_floats()) << "rows [" << offset << ", "
                                                     << offset + rows << ")";
  }
  Tensor part = Tensor::empty({T * 2 * D}), out = Tensor::empty({T * 2 * D});
  DropoutParams outside{0.4f, 21, 8, {2, global_rows, 4, D}};  // rows 4..5 of 5
  EXPECT_THROW(dropout(part, out, outside), Error);
}

TEST(Dropout, ZeroProbabilityIsIdentityAndBadProbabilityIsAnError) {
  Tensor x = Tensor::from_floats({1, -2, 3}, {3});
  Tensor y = Tensor::empty({3});
  dropout(x, y, {0.0f, 1, 1, {}});
  EXPECT_EQ(y.to_floats(), x.to_floats());
  EXPECT_THROW(dropout(x, y, {1.0f, 1, 1, {}}), Error);
}

}  // namespace
}  // namespace elmo
