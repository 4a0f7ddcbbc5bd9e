// CudaStream and CudaEvent on a device: the stream really is non-blocking (kCudaStreamFlags),
// and a fork/join through events orders work between it and the legacy default stream (the
// pattern BiLM and DenseOverlap use now that nothing orders them implicitly).
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <vector>

#include "kernels/pointwise.h"
#include "runtime/stream.h"
#include "runtime/tensor.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

TEST(StreamGpu, CudaStreamIsNonBlocking) {
  ELMO_SKIP_WITHOUT_GPU();
  CudaStream stream(0);
  unsigned flags = 0;
  ASSERT_EQ(cudaStreamGetFlags(stream.get(), &flags), cudaSuccess);
  EXPECT_EQ(flags & cudaStreamNonBlocking, cudaStreamNonBlocking);
}

TEST(StreamGpu, ForkAndJoinThroughEventsOrderTheStreams) {
  ELMO_SKIP_WITHOUT_GPU();
  const Device dev = Device::cuda(0);
  const int64_t n = int64_t{1} << 24;  // 64 MiB: long enough that an unordered read would race
  Tensor a = Tensor::empty({n}, DType::kF32, dev), b = Tensor::empty({n}, DType::kF32, dev);
  CudaStream side(0);
  CudaEvent forked(0), joined(0);
  for (int round = 0; round < 4; ++round) {
    const float value = 1.5f + static_cast<float>(round);
    fill_floats(dev, a.data<float>(), n, value);  // stream 0
    forked.record(current_stream());
    forked.wait(side.get());
    {
      StreamGuard on_side(side.get());
      copy_floats(dev, b.data<float>(), a.data<float>(), n);
      fill_floats(dev, a.data<float>(), n, -value);  // a is free again once b holds it
    }
    joined.record(side.get());
    joined.wait(current_stream());
    const std::vector<float> got = b.to_floats();  // stream 0, after the join
    ASSERT_EQ(got.front(), value);
    ASSERT_EQ(got.back(), value);
    ASSERT_EQ(a.to_floats().back(), -value);
  }
}

}  // namespace
}  // namespace elmo
