#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

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
  if (!cuda_uses_pool(0)) GTEST_SKIP() << "cuda:0 allocates without a pool (see the warning)";
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

// The path of drivers without pools, forced on this GPU: plain cudaMalloc/cudaFree, the peak
// still counted, and blocks allocated from the pool before still freed to the pool. (It stays
// plain for the rest of this process: CTest runs each test in its own.)
TEST(CudaMemoryGpu, PlainFallbackAllocatesFreesAndCountsThePeak) {
  ELMO_SKIP_WITHOUT_GPU();
  Tensor before = Tensor::from_floats({1, 2, 3}, {3}).to(Device::cuda(0));
  cuda_fall_back_to_plain_allocation(0, "forced by PlainFallbackAllocatesFreesAndCountsThePeak");
  EXPECT_FALSE(cuda_uses_pool(0));
  const size_t peak_before = cuda_peak_bytes(0);
  const int64_t n = int64_t{64} << 20;  // 256 MiB
  {
    Tensor big = Tensor::zeros({n}, DType::kF32, Device::cuda(0));
    EXPECT_GE(cuda_peak_bytes(0), peak_before + sizeof(float) * n);
    const std::vector<float> tail = big.rows(n - 4, n).to_floats();
    EXPECT_EQ(tail, std::vector<float>(4, 0.0f));
  }
  Tensor after = Tensor::from_floats({4, 5}, {2}).to(Device::cuda(0));
  EXPECT_EQ(after.to_floats(), (std::vector<float>{4, 5}));
  EXPECT_EQ(before.to_floats(), (std::vector<float>{1, 2, 3}));
  before = Tensor();  // allocated from the pool: freed to it
  cuda_synchronize(0);
}

}  // namespace
}  // namespace elmo
