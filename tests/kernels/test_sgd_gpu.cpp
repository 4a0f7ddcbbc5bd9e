// GPU twin of SGD: same f32 operations in the same order as the CPU.
#include <gtest/gtest.h>

#include "kernels/sgd.h"
#include "runtime/rng.h"
#include "runtime/tensor.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

using testing::random_tensor;

// Tolerance: the device rounds each op explicitly; a contracting host build may differ by 1 ulp.
constexpr float kAtol = 1e-7f, kRtol = 2e-7f;

TEST(SgdGpu, DenseAndRowsMatchCpu) {
  ELMO_SKIP_WITHOUT_GPU();
  const Device gpu = Device::cuda(0);
  const int64_t n = 100001;
  Tensor p = random_tensor({n}, 1), g = random_tensor({n}, 2);
  Tensor gp = p.to(gpu), gg = g.to(gpu);
  sgd_dense(Device::cpu(), p.data<float>(), g.data<float>(), n, 0.5f, 0.3f);
  sgd_dense(Device::cuda(0), gp.data<float>(), gg.data<float>(), n, 0.5f, 0.3f);
  EXPECT_TRUE(testing::all_close(gp.to_floats(), p.to_floats(), kAtol, kRtol));

  const int64_t rows = 400, dim = 9;
  Tensor t = random_tensor({rows, dim}, 3), rg = random_tensor({100, dim}, 4);
  Tensor ids = Tensor::empty({100}, DType::kI32);
  for (int32_t k = 0; k < 100; ++k) ids.data<int32_t>()[k] = 4 * k + 3;
  Tensor gt = t.to(gpu), gids = ids.to(gpu), grg = rg.to(gpu);
  sgd_rows(Device::cpu(), t.data<float>(), dim, ids.data<int32_t>(), rg.data<float>(), 100, 1.0f,
           1.0f);
  sgd_rows(Device::cuda(0), gt.data<float>(), dim, gids.data<int32_t>(), grg.data<float>(), 100,
           1.0f, 1.0f);
  EXPECT_TRUE(testing::all_close(gt.to_floats(), t.to_floats(), kAtol, kRtol));
}

}  // namespace
}  // namespace elmo
