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

// The fallback decision of cuda_allocate: the pool only where the driver has one and
// cudaMallocAsync works; otherwise a reason for the one-line notice.
TEST(CudaMemory, PoolFallbackOnlyWhereTheDriverHasNoPools) {
  EXPECT_EQ(cuda_pool_fallback_reason(1, false), "");
  const std::string no_pools = cuda_pool_fallback_reason(0, false);
  EXPECT_NE(no_pools.find("cudaDevAttrMemoryPoolsSupported = 0"), std::string::npos) << no_pools;
  const std::string refused = cuda_pool_fallback_reason(1, true);
  EXPECT_NE(refused.find("cudaMallocAsync"), std::string::npos) << refused;
  EXPECT_NE(refused.find("cudaErrorNotSupported"), std::string::npos) << refused;
  EXPECT_NE(cuda_pool_fallback_reason(-1, false).find("could not be read"), std::string::npos);
  EXPECT_FALSE(cuda_pool_fallback_reason(0, true).empty());
}

}  // namespace
}  // namespace elmo
