// Pinned uploads: many uploads of mixed sizes (arenas wrap around, one upload larger than an
// arena forces a growth) all arrive intact, and the source may be overwritten as soon as
// upload_to_device returns.
#include "runtime/pinned.h"

#include <gtest/gtest.h>

#include <numeric>
#include <vector>

#include "runtime/stream.h"
#include "runtime/tensor.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

TEST(PinnedGpu, UploadsArriveIntactWhateverTheirSizes) {
  ELMO_SKIP_WITHOUT_GPU();
  const Device dev = Device::cuda(0);
  CudaStream stream(0);
  StreamGuard guard(stream.get());
  std::vector<Tensor> targets;
  std::vector<std::vector<int32_t>> expected;
  std::vector<int32_t> source;
  for (int i = 0; i < 300; ++i) {
    // Mostly small uploads; every 100th is 3 MiB (larger than an arena).
    const int64_t n = i % 100 == 99 ? (3 << 20) / 4 : 1 + (i * 7919) % 20000;
    source.resize(n);
    std::iota(source.begin(), source.end(), i * 1000);
    targets.push_back(Tensor::empty({n}, DType::kI32, dev));
    upload_to_device(0, targets.back().raw(), source.data(), source.size() * sizeof(int32_t));
    expected.push_back(source);
    std::fill(source.begin(), source.end(), -1);  // the staged copy must not see this
  }
  for (size_t i = 0; i < targets.size(); ++i) {
    const Tensor host = targets[i].to(Device::cpu());
    const int32_t* got = host.data<int32_t>();
    ASSERT_TRUE(std::equal(expected[i].begin(), expected[i].end(), got)) << "upload " << i;
  }
}

}  // namespace
}  // namespace elmo
