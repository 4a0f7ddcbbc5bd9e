// GPU twin of the multi-tensor sum of squares.
#include <gtest/gtest.h>

#include "kernels/grad_norm.h"
#include "runtime/rng.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

TEST(GradNormGpu, MatchesCpuAndIsDeterministic) {
  ELMO_SKIP_WITHOUT_GPU();
  const Device gpu = Device::cuda(0);
  Rng rng(1, 0);
  std::vector<Tensor> host;
  for (int64_t n : {int64_t{1}, int64_t{4096}, int64_t{4097}, int64_t{1000003}}) {
    Tensor t = Tensor::empty({n});
    for (int64_t e = 0; e < n; ++e) t.data<float>()[e] = rng.normal();
    host.push_back(t);
  }
  std::vector<Tensor> device;
  for (const Tensor& t : host) device.push_back(t.to(gpu));
  const double cpu = sum_of_squares(host);
  const double a = sum_of_squares(device), b = sum_of_squares(device);
  EXPECT_EQ(a, b);
  // Tolerance: double sums in a different order, relative ~1e-15.
  EXPECT_NEAR(a, cpu, 1e-12 * cpu);
  // Exact case: small integers square and add exactly in any order.
  Tensor ints = Tensor::empty({5000});
  for (int64_t e = 0; e < 5000; ++e) ints.data<float>()[e] = static_cast<float>(e % 100);
  EXPECT_EQ(sum_of_squares({ints.to(gpu)}), sum_of_squares({ints}));
}

}  // namespace
}  // namespace elmo
