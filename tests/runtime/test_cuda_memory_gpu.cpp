#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cstdint>

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

// The pool keeps freed memory across synchronisations (release threshold set on the first
// allocation) instead of returning it to the driver and mapping it again next step.
TEST(CudaMemoryGpu, PoolKeepsFreedMemoryAcrossSynchronisations) {
  ELMO_SKIP_WITHOUT_GPU();
  const size_t bytes = size_t{256} << 20;
  void* block = cuda_allocate(bytes, 0);
  cudaMemPool_t pool = nullptr;
  ASSERT_EQ(cudaDeviceGetMemPool(&pool, 0), cudaSuccess);
  uint64_t threshold = 0;
  ASSERT_EQ(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold),
            cudaSuccess);
  EXPECT_EQ(threshold, UINT64_MAX);
  cuda_release(block, 0);
  cuda_synchronize(0);
  uint64_t reserved = 0;
  ASSERT_EQ(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemCurrent, &reserved),
            cudaSuccess);
  EXPECT_GE(reserved, bytes) << "the pool gave the freed block back to the driver";
}

}  // namespace
}  // namespace elmo
