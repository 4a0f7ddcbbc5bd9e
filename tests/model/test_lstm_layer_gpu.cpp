// LSTMP layer on CUDA against the same layer on the CPU: forward (outputs and final state) and
// backward (dx and every weight gradient), with and without projection, clips and initial
// state; training forward followed by backward twice with the same workspace (reuse); and an
// inference forward without a workspace.
//
// Tolerances (fp32 everywhere, TF32 off: the thread's GEMM precision is the default fp32): the
// GEMMs sum in another order on cuBLAS than on OpenBLAS (|error| ~ K * 2^-24 * sum|terms|, K <= 64
// here), and the differences pass through T recurrent steps and the T*B-row weight-gradient
// sums: forward atol 2e-5 / rtol 2e-5, gradients atol 1e-4 / rtol 5e-4. A wrong transpose,
// offset or missing term is O(1) off. A clip decision flipping between the backends (a
// pre-clip value within ~1e-6 of the clip) would move a gradient element by O(1); with these
// sizes that has probability well below 1e-2, and the data are fixed, so the outcome is
// reproducible.
#include <gtest/gtest.h>

#include <vector>

#include "model/lstm_layer.h"
#include "runtime/gemm.h"
#include "runtime/rng.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

const Device kGpu = Device::cuda(0);

struct Problem {
  LstmLayerShape shape;
  int64_t T, B;
  Tensor w_ih, w_hh, b, w_hr, x, h0, c0, dy;  // CPU
  bool with_state;

  Problem(LstmLayerShape s, int64_t t, int64_t batch, bool state, uint64_t seed)
      : shape(s), T(t), B(batch), with_state(state) {
    const int64_t G = 4 * s.cell_size, H = s.hidden();
    w_ih = scaled({G, s.input_dim}, seed + 1, 0.8f);
    w_hh = scaled({G, H}, seed + 2, 0.6f);
    b = scaled({G}, seed + 3, 0.5f);
    if (s.proj_dim > 0) w_hr = scaled({s.proj_dim, s.cell_size}, seed + 4, 0.8f);
    x = scaled({T, B, s.input_dim}, seed + 5, 1.0f);
    h0 = scaled({B, H}, seed + 6, 0.4f);
    c0 = scaled({B, s.cell_size}, seed + 7, 0.4f);
    dy = scaled({T, B, H}, seed + 8, 1.0f);
  }
  static Tensor scaled(const Shape& shape, uint64_t seed, float scale) {
    Tensor t = testing::random_tensor(shape, seed);
    for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] *= scale;
    return t;
  }
};

struct Outputs {
  std::vector<float> y, h_last, c_last, dx, g_ih, g_hh, g_b, g_hr;
};

// Runs forward (training) + backward on `device`; gradients accumulate over `repeats` passes.
Outputs run(const Problem& p, Device device, int repeats) {
  auto on = [&](const Tensor& t) { return t.defined() ? t.to(device) : Tensor(); };
  const Tensor w_ih = on(p.w_ih), w_hh = on(p.w_hh), b = on(p.b), w_hr = on(p.w_hr);
  const Tensor x = on(p.x), h0 = on(p.h0), c0 = on(p.c0), dy = on(p.dy);
  const LstmLayerShape& s = p.shape;
  const int64_t H = s.hidden(), C = s.cell_size;
  Tensor y = Tensor::zeros({p.T, p.B, H}, DType::kF32, device);
  Tensor h_last = Tensor::zeros({p.B, H}, DType::kF32, device);
  Tensor c_last = Tensor::zeros({p.B, C}, DType::kF32, device);
  Tensor dx = Tensor::zeros({p.T, p.B, s.input_dim}, DType::kF32, device);
  Tensor g_ih = Tensor::zeros(w_ih.shape(), DType::kF32, device);
  Tensor g_hh = Tensor::zeros(w_hh.shape(), DType::kF32, device);
  Tensor g_b = Tensor::zeros(b.shape(), DType::kF32, device);
  Tensor g_hr = w_hr.defined() ? Tensor::zeros(w_hr.shape(), DType::kF32, device) : Tensor();
  const LstmLayerWeights weights{w_ih.data<float>(), w_hh.data<float>(), b.data<float>(),
                                 w_hr.defined() ? w_hr.data<float>() : nullptr, device};
  const LstmLayerGrads grads{g_ih.data<float>(), g_hh.data<float>(), g_b.data<float>(),
                             g_hr.defined() ? g_hr.data<float>() : nullptr};
  LstmLayerWorkspace ws;
  for (int r = 0; r < repeats; ++r) {
    lstm_layer_forward(s, weights, p.T, p.B, x.data<float>(),
                       p.with_state ? h0.data<float>() : nullptr,
                       p.with_state ? c0.data<float>() : nullptr, y.data<float>(),
                       h_last.data<float>(), c_last.data<float>(), &ws, true);
    lstm_layer_backward(s, weights, p.T, p.B, x.data<float>(), y.data<float>(), ws,
                        dy.data<float>(), dx.data<float>(), grads);
  }
  Outputs out{y.to_floats(), h_last.to_floats(), c_last.to_floats(), dx.to_floats(),
              g_ih.to_floats(), g_hh.to_floats(), g_b.to_floats(), {}};
  if (g_hr.defined()) out.g_hr = g_hr.to_floats();
  return out;
}

void compare(const Problem& p, int repeats) {
  const Outputs cpu = run(p, Device::cpu(), repeats), gpu = run(p, kGpu, repeats);
  constexpr float kFwdAtol = 2e-5f, kFwdRtol = 2e-5f, kGradAtol = 1e-4f, kGradRtol = 5e-4f;
  EXPECT_TRUE(testing::all_close(gpu.y, cpu.y, kFwdAtol, kFwdRtol)) << "y";
  EXPECT_TRUE(testing::all_close(gpu.h_last, cpu.h_last, kFwdAtol, kFwdRtol)) << "h_last";
  EXPECT_TRUE(testing::all_close(gpu.c_last, cpu.c_last, kFwdAtol, kFwdRtol)) << "c_last";
  EXPECT_TRUE(testing::all_close(gpu.dx, cpu.dx, kGradAtol, kGradRtol)) << "dx";
  EXPECT_TRUE(testing::all_close(gpu.g_ih, cpu.g_ih, kGradAtol, kGradRtol)) << "dW_ih";
  EXPECT_TRUE(testing::all_close(gpu.g_hh, cpu.g_hh, kGradAtol, kGradRtol)) << "dW_hh";
  EXPECT_TRUE(testing::all_close(gpu.g_b, cpu.g_b, kGradAtol, kGradRtol)) << "db";
  EXPECT_TRUE(testing::all_close(gpu.g_hr, cpu.g_hr, kGradAtol, kGradRtol)) << "dW_hr";
}

TEST(LstmLayerGpu, ProjectionClipsAndInitialStateMatchCpu) {
  ELMO_SKIP_WITHOUT_GPU();
  compare(Problem({24, 40, 16, 1.0f, 0.8f}, 7, 5, true, 10), 1);
}

TEST(LstmLayerGpu, ZeroStateWithoutClipsMatchesCpu) {
  ELMO_SKIP_WITHOUT_GPU();
  compare(Problem({24, 40, 16, 0.0f, 0.0f}, 6, 9, false, 20), 1);
}

TEST(LstmLayerGpu, PlainLstmMatchesCpu) {
  ELMO_SKIP_WITHOUT_GPU();
  compare(Problem({12, 33, 0, 1.5f, 0.0f}, 5, 4, true, 30), 1);
}

TEST(LstmLayerGpu, WorkspaceReuseAccumulatesLikeCpu) {
  ELMO_SKIP_WITHOUT_GPU();
  compare(Problem({24, 40, 16, 1.0f, 0.8f}, 4, 3, true, 40), 2);
}

TEST(LstmLayerGpu, InferenceWithoutWorkspaceMatchesCpu) {
  ELMO_SKIP_WITHOUT_GPU();
  const Problem p({24, 40, 16, 1.0f, 0.8f}, 8, 6, true, 50);
  std::vector<float> results[2];
  for (int k = 0; k < 2; ++k) {
    const Device device = k == 0 ? Device::cpu() : kGpu;
    const Tensor w_ih = p.w_ih.to(device), w_hh = p.w_hh.to(device), b = p.b.to(device);
    const Tensor w_hr = p.w_hr.to(device), x = p.x.to(device);
    Tensor y = Tensor::zeros({p.T, p.B, 16}, DType::kF32, device);
    const LstmLayerWeights weights{w_ih.data<float>(), w_hh.data<float>(), b.data<float>(),
                                   w_hr.data<float>(), device};
    lstm_layer_forward(p.shape, weights, p.T, p.B, x.data<float>(), nullptr, nullptr,
                       y.data<float>(), nullptr, nullptr, nullptr, false);
    results[k] = y.to_floats();
  }
  EXPECT_TRUE(testing::all_close(results[1], results[0], 2e-5f, 2e-5f));
}

// kBf16: the forward converts the weights once into the workspace and its GEMMs and the
// backward's use that copy. Weights changed in place between steps (as the optimizer does)
// must be seen by the next forward: a reused workspace gives exactly the bits of a fresh one.
TEST(LstmLayerGpu, Bf16WeightCopiesFollowTheWeights) {
  ELMO_SKIP_WITHOUT_GPU();
  GemmPrecisionGuard bf16(GemmPrecision::kBf16);
  const Problem first({24, 40, 16, 1.0f, 0.8f}, 5, 4, true, 60);
  const Problem second({24, 40, 16, 1.0f, 0.8f}, 5, 4, true, 61);
  const LstmLayerShape& s = first.shape;
  const Tensor x = first.x.to(kGpu), h0 = first.h0.to(kGpu), c0 = first.c0.to(kGpu);
  const Tensor dy = first.dy.to(kGpu);
  Tensor w_ih = first.w_ih.to(kGpu), w_hh = first.w_hh.to(kGpu), b = first.b.to(kGpu);
  Tensor w_hr = first.w_hr.to(kGpu);
  const LstmLayerWeights weights{w_ih.data<float>(), w_hh.data<float>(), b.data<float>(),
                                 w_hr.data<float>(), kGpu};
  auto step = [&](LstmLayerWorkspace& ws) {
    Tensor y = Tensor::zeros({first.T, first.B, 16}, DType::kF32, kGpu);
    Tensor dx = Tensor::zeros({first.T, first.B, s.input_dim}, DType::kF32, kGpu);
    Tensor g_ih = Tensor::zeros(w_ih.shape(), DType::kF32, kGpu);
    Tensor g_hh = Tensor::zeros(w_hh.shape(), DType::kF32, kGpu);
    Tensor g_b = Tensor::zeros(b.shape(), DType::kF32, kGpu);
    Tensor g_hr = Tensor::zeros(w_hr.shape(), DType::kF32, kGpu);
    lstm_layer_forward(s, weights, first.T, first.B, x.data<float>(), h0.data<float>(),
                       c0.data<float>(), y.data<float>(), nullptr, nullptr, &ws, true);
    lstm_layer_backward(
        s, weights, first.T, first.B, x.data<float>(), y.data<float>(), ws, dy.data<float>(),
        dx.data<float>(),
        {g_ih.data<float>(), g_hh.data<float>(), g_b.data<float>(), g_hr.data<float>()});
    return std::vector<std::vector<float>>{y.to_floats(), dx.to_floats(), g_ih.to_floats(),
                                           g_hh.to_floats(), g_hr.to_floats()};
  };
  LstmLayerWorkspace reused;
  const auto before = step(reused);
  // New values in the same buffers, as an optimizer step writes them.
  w_ih.copy_from(second.w_ih.to(kGpu));
  w_hh.copy_from(second.w_hh.to(kGpu));
  w_hr.copy_from(second.w_hr.to(kGpu));
  const auto after = step(reused);
  LstmLayerWorkspace fresh;
  const auto expected = step(fresh);
  EXPECT_NE(after[0], before[0]) << "the new weights changed nothing";
  const char* names[] = {"y", "dx", "dW_ih", "dW_hh", "dW_hr"};
  for (size_t i = 0; i < expected.size(); ++i) EXPECT_EQ(after[i], expected[i]) << names[i];
}

}  // namespace
}  // namespace elmo
