#include <gtest/gtest.h>

#include "runtime/cuda_memory.h"
#include "runtime/tensor.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

TEST(CudaMemoryGpu, AllocateCopyZeroAndPeak) {
  ELMO_SKIP_WITHOUT_GPU();
  EXPECT_FALSE(cuda_device_name(0).empty());
  Tensor host = Tensor::from_floats({1, 2, 3, 4, 5}, {5});
  Tensor device = host.to(Device::cuda(0));
  EXPECT_EQ(device.device(), Device::cuda(0));
  EXPECT_EQ(device.to_floats(), host.to_floats());
  Tensor view = device.rows(1, 4);
  EXPECT_EQ(view.to_floats(), (std::vector<float>{2, 3, 4}));
  device.zero_();
  EXPECT_EQ(device.to_floats(), std::vector<float>(5, 0.0f));
  EXPECT_GE(cuda_peak_bytes(0), 20u);
}

}  // namespace
}  // namespace elmo
