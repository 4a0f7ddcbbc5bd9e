// Without a GPU: discovery says 0 and device tensors are refused with a clear message.
// With one: allocation, copies both ways and the peak counter (the _gpu twin file).
#include "runtime/cuda_memory.h"

#include <gtest/gtest.h>

#include "runtime/tensor.h"

namespace elmo {
namespace {

TEST(CudaMemory, NoGpuMeansNoDeviceTensors) {
  if (cuda_device_count() > 0) GTEST_SKIP() << "a GPU is present (see test_cuda_memory_gpu)";
  try {
    Tensor::empty({4}, DType::kF32, Device::cuda(0));
    FAIL() << "allocated on a missing GPU";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("0 GPU(s) are visible"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace elmo
