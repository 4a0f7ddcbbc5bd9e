// GPU twin of Adagrad: same f32 operations in the same order as the CPU.
#include <gtest/gtest.h>

#include "kernels/adagrad.h"
#include "runtime/rng.h"
#include "runtime/tensor.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

using testing::random_tensor;

// Tolerance: 1 ulp-ish. The device uses explicitly rounded ops; a host build with FMA
// contraction (-march=native) may differ in the last bit.
constexpr float kAtol = 1e-7f, kRtol = 2e-7f;

TEST(AdagradGpu, DenseMatchesCpu) {
  ELMO_SKIP_WITHOUT_GPU();
  const Device gpu = Device::cuda(0);
  const int64_t n = (1 << 20) + 3;
  Tensor p = random_tensor({n}, 1), acc = Tensor::empty({n}), g = random_tensor({n}, 2);
  acc.fill_(1.0f);
  Tensor gp = p.to(gpu), gacc = acc.to(gpu), gg = g.to(gpu);
  adagrad_dense(Device::cpu(), p.data<float>(), acc.data<float>(), g.data<float>(), n, 0.2f, 1e-7f,
                0.9f);
  adagrad_dense(Device::cuda(0), gp.data<float>(), gacc.data<float>(), gg.data<float>(), n, 0.2f,
                1e-7f, 0.9f);
  EXPECT_TRUE(testing::all_close(gp.to_floats(), p.to_floats(), kAtol, kRtol));
  EXPECT_TRUE(testing::all_close(gacc.to_floats(), acc.to_floats(), kAtol, kRtol));
}

TEST(AdagradGpu, RowsMatchCpuAndLeaveOtherRowsAlone) {
  ELMO_SKIP_WITHOUT_GPU();
  const Device gpu = Device::cuda(0);
  const int64_t rows = 1000, dim = 33;
  Tensor t = random_tensor({rows, dim}, 3), acc = Tensor::empty({rows, dim});
  acc.fill_(1.0f);
  Tensor ids = Tensor::empty({300}, DType::kI32);
  for (int32_t k = 0; k < 300; ++k) ids.data<int32_t>()[k] = 3 * k + 1;
  Tensor g = random_tensor({300, dim}, 4);
  Tensor gt = t.to(gpu), gacc = acc.to(gpu);
  adagrad_rows(Device::cpu(), t.data<float>(), acc.data<float>(), dim, ids.data<int32_t>(),
               g.data<float>(), 300, 0.2f, 1e-7f, 1.0f);
  Tensor gids = ids.to(gpu), gg = g.to(gpu);
  adagrad_rows(Device::cuda(0), gt.data<float>(), gacc.data<float>(), dim, gids.data<int32_t>(),
               gg.data<float>(), 300, 0.2f, 1e-7f, 1.0f);
  EXPECT_TRUE(testing::all_close(gt.to_floats(), t.to_floats(), kAtol, kRtol));
  EXPECT_TRUE(testing::all_close(gacc.to_floats(), acc.to_floats(), kAtol, kRtol));
}

}  // namespace
}  // namespace elmo
