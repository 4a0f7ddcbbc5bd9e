// GPU twin check: CUDA dropout must drop exactly the elements the CPU drops (same Philox draw).
#include <gtest/gtest.h>

#include "kernels/dropout.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

TEST(DropoutGpu, MatchesCpuBitForBit) {
  ELMO_SKIP_WITHOUT_GPU();
  const int64_t n = 1 << 20 | 37;  // tail block
  Tensor x = Tensor::empty({n});
  for (int64_t e = 0; e < n; ++e) x.data<float>()[e] = static_cast<float>(e % 113) - 50.0f;
  Tensor cpu_y = Tensor::empty({n});
  dropout(x, cpu_y, {0.3f, 99, 1234, {}});
  Tensor gx = x.to(Device::cuda(0));
  Tensor gy = Tensor::empty({n}, DType::kF32, Device::cuda(0));
  dropout(gx, gy, {0.3f, 99, 1234, {}});
  // Tolerance 0: the mask and the scale are the same f32 operations on both sides.
  EXPECT_TRUE(testing::all_close(gy.to_floats(), cpu_y.to_floats(), 0.0f, 0.0f));
}

// In place (y == x), as the LSTM stack calls it: the same bits as out of place on the CPU.
TEST(DropoutGpu, InPlaceMatchesCpuBitForBit) {
  ELMO_SKIP_WITHOUT_GPU();
  const int64_t n = 1 << 20 | 37;
  Tensor x = Tensor::empty({n});
  for (int64_t e = 0; e < n; ++e) x.data<float>()[e] = static_cast<float>(e % 89) - 44.0f;
  Tensor cpu_y = Tensor::empty({n});
  dropout(x, cpu_y, {0.4f, 5, 77, {}});
  Tensor g = x.to(Device::cuda(0));
  dropout(g, g, {0.4f, 5, 77, {}});
  EXPECT_TRUE(testing::all_close(g.to_floats(), cpu_y.to_floats(), 0.0f, 0.0f));
}

TEST(DropoutGpu, RowShardLayoutMatchesCpu) {
  ELMO_SKIP_WITHOUT_GPU();
  const int64_t T = 20, rows = 3, D = 513;  // rows [5, 8) of 16 per step
  const DropoutParams params{0.25f, 7, 42, {rows, 16, 5, D}};
  Tensor x = Tensor::empty({T * rows * D});
  for (int64_t e = 0; e < x.numel(); ++e) x.data<float>()[e] = static_cast<float>(e % 97) - 40.0f;
  Tensor cpu_y = Tensor::empty(x.shape());
  dropout(x, cpu_y, params);
  Tensor gx = x.to(Device::cuda(0));
  Tensor gy = Tensor::empty(x.shape(), DType::kF32, Device::cuda(0));
  dropout(gx, gy, params);
  EXPECT_TRUE(testing::all_close(gy.to_floats(), cpu_y.to_floats(), 0.0f, 0.0f));
}

}  // namespace
}  // namespace elmo
