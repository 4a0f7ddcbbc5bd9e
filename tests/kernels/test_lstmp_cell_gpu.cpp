// GPU twin check: the CUDA LSTM cell against the CPU twin, forward (with and without saved
// outputs, gates in place) and backward, sizes with a partial tail block.
#include <gtest/gtest.h>

#include <vector>

#include "kernels/lstmp_cell.h"
#include "runtime/rng.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

Tensor random_tensor(uint64_t seed, const Shape& shape, float lo, float hi) {
  Rng rng(seed, kRngSynthetic);
  std::vector<float> v(shape.numel());
  for (float& e : v) e = lo + (hi - lo) * rng.uniform();
  return Tensor::from_floats(v, shape);
}

Tensor gpu(const Tensor& t) { return t.to(Device::cuda(0)); }
Tensor gpu_empty(const Shape& s) { return Tensor::empty(s, DType::kF32, Device::cuda(0)); }

// Tolerance: the same f32 formula on both sides; the CUDA expf/tanhf differ from glibc's by at
// most 2 ulp, which moves O(1) results by ~1e-7; 1e-6 absolute leaves room for propagation.
constexpr float kAtol = 1e-6f, kRtol = 1e-6f;

TEST(LstmpCellGpu, ForwardAndBackwardMatchCpu) {
  ELMO_SKIP_WITHOUT_GPU();
  for (float clip : {0.0f, 1.0f}) {
    const int64_t B = 37, C = 259;  // B*C = 9583: a partial last block of 256 threads
    const Tensor z = random_tensor(1, {B, 4 * C}, -4.0f, 4.0f);
    const Tensor c_prev = random_tensor(2, {B, C}, -2.0f, 2.0f);
    const Tensor dm = random_tensor(3, {B, C}, -1.0f, 1.0f);
    const Tensor dc_next = random_tensor(4, {B, C}, -1.0f, 1.0f);

    Tensor c = Tensor::empty({B, C}), m = Tensor::empty({B, C});
    Tensor gates = Tensor::empty({B, 4 * C}), c_raw = Tensor::empty({B, C});
    lstmp_cell_forward(z, c_prev, clip, c, m, gates, c_raw);
    Tensor dz = Tensor::empty({B, 4 * C}), dc_prev = Tensor::empty({B, C});
    lstmp_cell_backward(gates, c_prev, c_raw, clip, dm, dc_next, dz, dc_prev);

    // GPU, gates written in place over z, dz in place over the gates.
    Tensor gz = gpu(z), gc = gpu_empty({B, C}), gm = gpu_empty({B, C}), graw = gpu_empty({B, C});
    lstmp_cell_forward(gz, gpu(c_prev), clip, gc, gm, gz, graw);
    EXPECT_TRUE(testing::all_close(gc.to_floats(), c.to_floats(), kAtol, kRtol));
    EXPECT_TRUE(testing::all_close(gm.to_floats(), m.to_floats(), kAtol, kRtol));
    EXPECT_TRUE(testing::all_close(gz.to_floats(), gates.to_floats(), kAtol, kRtol));
    EXPECT_TRUE(testing::all_close(graw.to_floats(), c_raw.to_floats(), kAtol, kRtol));

    // Backward from the CPU's saved values so only the backward math is compared.
    Tensor gg = gpu(gates), gdc = gpu(dc_next);
    lstmp_cell_backward(gg, gpu(c_prev), gpu(c_raw), clip, gpu(dm), gdc, gg, gdc);
    EXPECT_TRUE(testing::all_close(gg.to_floats(), dz.to_floats(), kAtol, kRtol));
    EXPECT_TRUE(testing::all_close(gdc.to_floats(), dc_prev.to_floats(), kAtol, kRtol));

    // Inference (nothing saved) and zero state.
    Tensor ic = gpu_empty({B, C}), im = gpu_empty({B, C});
    lstmp_cell_forward(gpu(z), Tensor(), clip, ic, im, Tensor(), Tensor());
    Tensor cc = Tensor::empty({B, C}), cm = Tensor::empty({B, C});
    lstmp_cell_forward(z, Tensor(), clip, cc, cm, Tensor(), Tensor());
    EXPECT_TRUE(testing::all_close(ic.to_floats(), cc.to_floats(), kAtol, kRtol));
    EXPECT_TRUE(testing::all_close(im.to_floats(), cm.to_floats(), kAtol, kRtol));
  }
}

TEST(LstmpCellGpu, DeviceMismatchIsAnError) {
  ELMO_SKIP_WITHOUT_GPU();
  const Tensor z = random_tensor(5, {2, 8}, -1.0f, 1.0f);
  Tensor c = gpu_empty({2, 2}), m = Tensor::empty({2, 2});
  EXPECT_THROW(lstmp_cell_forward(z, Tensor(), 0.0f, c, m, Tensor(), Tensor()), Error);
}

}  // namespace
}  // namespace elmo
