// LSTMP layer with LstmKernel::kPersistent on the CPU (the persistent kernels' CPU twin, bf16
// roundings included) against the standard fp32 layer: forward, backward from identical saved
// activations, a whole forward+backward without clips, an ELMo-sized layer with few rows,
// inference vs training, option parsing and the refusals.
//
// Tolerances. bf16 keeps 8 significant bits: unit roundoff u = 2^-9. A bf16 x bf16 product
// with fp32 accumulation is off by at most 2u|a||b| per term, so a dot product by at most
// 2u sum|a_k||b_k|; the weights below are scaled like an initialisation (|W| <= 2/sqrt(fan_in)),
// which keeps sum|W||h| around 1 relative to the result's scale. Per step the forward has two
// such products (recurrent, projection): <= 4u; the cell's derivatives are <= 1 and the forget
// gate carries at most the previous error, so over these T <= 5 steps 2x that: forward values
// within 8u = 2^-6 of the largest reference value of the same tensor. The backward adds two
// bf16 products per step (dz W_hh, dr W_hr) on top of the forward's: 16u = 2^-5 of the largest
// reference value for every gradient. A wrong index or a missing term is O(1) of the scale.
// Clip masks are discontinuous: a bf16 perturbation (~1e-3) can flip a mask where a pre-clip
// value sits near the clip, which would move single gradient elements by O(1). So the backward
// with clips is compared from identical saved activations (both backwards read the same masks);
// the full forward+backward comparison runs without clips.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <vector>

#include "model/lstm_layer.h"
#include "runtime/rng.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

constexpr float kU = 1.0f / 512.0f;  // bf16 unit roundoff 2^-9
constexpr float kForwardTol = 8 * kU, kGradientTol = 16 * kU;

struct Problem {
  LstmLayerShape shape;
  int64_t T, B;
  std::vector<float> w_ih, w_hh, b, w_hr, x, h0, c0, dy;

  Problem(LstmLayerShape s, int64_t t, int64_t batch, uint64_t seed) : shape(s), T(t), B(batch) {
    const int64_t G = 4 * s.cell_size, H = s.hidden(), C = s.cell_size;
    w_ih = testing::uniform_floats(seed + 1, G * s.input_dim, 2.0f / std::sqrt(float(s.input_dim)));
    w_hh = testing::uniform_floats(seed + 2, G * H, 2.0f / std::sqrt(float(H)));
    b = testing::uniform_floats(seed + 3, G, 0.5f);
    w_hr = testing::uniform_floats(seed + 4, s.proj_dim * C, 2.0f / std::sqrt(float(C)));
    x = testing::uniform_floats(seed + 5, T * B * s.input_dim, 1.0f);
    h0 = testing::uniform_floats(seed + 6, B * H, 0.4f);
    c0 = testing::uniform_floats(seed + 7, B * C, 0.4f);
    dy = testing::uniform_floats(seed + 8, T * B * H, 1.0f);
  }
  LstmLayerWeights weights(LstmKernel kernel) const {
    LstmLayerWeights w{w_ih.data(), w_hh.data(), b.data(), w_hr.data()};
    w.kernel = kernel;
    return w;
  }
};

struct Forward {
  std::vector<float> y, h_last, c_last;
};
struct Grads {
  std::vector<float> dx, w_ih, w_hh, b, w_hr;
};

Forward run_forward(const Problem& p, LstmKernel kernel, LstmLayerWorkspace* ws, bool training) {
  const int64_t H = p.shape.hidden(), C = p.shape.cell_size;
  Forward f{std::vector<float>(p.T * p.B * H), std::vector<float>(p.B * H),
            std::vector<float>(p.B * C)};
  lstm_layer_forward(p.shape, p.weights(kernel), p.T, p.B, p.x.data(), p.h0.data(), p.c0.data(),
                     f.y.data(), f.h_last.data(), f.c_last.data(), ws, training);
  return f;
}

Grads run_backward(const Problem& p, LstmKernel kernel, LstmLayerWorkspace& ws,
                   const std::vector<float>& y) {
  Grads g{std::vector<float>(p.x.size()), std::vector<float>(p.w_ih.size()),
          std::vector<float>(p.w_hh.size()), std::vector<float>(p.b.size()),
          std::vector<float>(p.w_hr.size())};
  lstm_layer_backward(p.shape, p.weights(kernel), p.T, p.B, p.x.data(), y.data(), ws, p.dy.data(),
                      g.dx.data(), {g.w_ih.data(), g.w_hh.data(), g.b.data(), g.w_hr.data()});
  return g;
}

void expect_grads_close(const Grads& a, const Grads& e) {
  EXPECT_TRUE(testing::within_scale(a.dx, e.dx, kGradientTol, "dx"));
  EXPECT_TRUE(testing::within_scale(a.w_ih, e.w_ih, kGradientTol, "dW_ih"));
  EXPECT_TRUE(testing::within_scale(a.w_hh, e.w_hh, kGradientTol, "dW_hh"));
  EXPECT_TRUE(testing::within_scale(a.b, e.b, kGradientTol, "db"));
  EXPECT_TRUE(testing::within_scale(a.w_hr, e.w_hr, kGradientTol, "dW_hr"));
}

// Forward of both paths, then both backwards from the persistent forward's saved activations.
void compare(const Problem& p) {
  LstmLayerWorkspace ws_std, ws_a, ws_b;
  const Forward ref = run_forward(p, LstmKernel::kStandard, &ws_std, true);
  const Forward per = run_forward(p, LstmKernel::kPersistent, &ws_a, true);
  float max_diff = 0.0f;
  EXPECT_TRUE(testing::within_scale(per.y, ref.y, kForwardTol, "y", &max_diff));
  EXPECT_GT(max_diff, 0.0f) << "the persistent path should differ by its bf16 roundings";
  EXPECT_TRUE(testing::within_scale(per.h_last, ref.h_last, kForwardTol, "h_last"));
  EXPECT_TRUE(testing::within_scale(per.c_last, ref.c_last, kForwardTol, "c_last"));

  const Forward again = run_forward(p, LstmKernel::kPersistent, &ws_b, true);
  ASSERT_EQ(again.y, per.y) << "the twin is deterministic";
  const Grads g_std = run_backward(p, LstmKernel::kStandard, ws_a, per.y);
  const Grads g_per = run_backward(p, LstmKernel::kPersistent, ws_b, per.y);
  expect_grads_close(g_per, g_std);
}

TEST(LstmLayerPersistent, ClipsAndInitialStateMatchStandard) {
  compare(Problem({24, 64, 32, 0.5f, 0.3f}, 5, 3, 100));
}

TEST(LstmLayerPersistent, SeveralUnitGroupsAndTilesMatchStandard) {
  // C = 256: 16 gate blocks on an H100 plan; 17 rows (a partial 16-row tile on the GPU).
  compare(Problem({40, 256, 48, 1.0f, 1.0f}, 4, 17, 200));
}

TEST(LstmLayerPersistent, WholeForwardBackwardWithoutClipsMatchesStandard) {
  const Problem p({24, 64, 32, 0.0f, 0.0f}, 5, 3, 300);
  LstmLayerWorkspace ws_std, ws_per;
  const Forward ref = run_forward(p, LstmKernel::kStandard, &ws_std, true);
  const Forward per = run_forward(p, LstmKernel::kPersistent, &ws_per, true);
  EXPECT_TRUE(testing::within_scale(per.y, ref.y, kForwardTol, "y"));
  expect_grads_close(run_backward(p, LstmKernel::kPersistent, ws_per, per.y),
                     run_backward(p, LstmKernel::kStandard, ws_std, ref.y));
}

// bilm-tf sizes (C = 4096, P = 512, E = 512, clips 3) with 2 rows and 2 steps: the H100 plan of
// 128 gate blocks and its tiles, on the CPU twin.
TEST(LstmLayerPersistent, ElmoSizedLayerMatchesStandard) {
  const auto start = std::chrono::steady_clock::now();
  compare(Problem({512, 4096, 512, 3.0f, 3.0f}, 2, 2, 400));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("ELMo-sized layer, 2 rows x 2 steps, both paths: %.2f s\n", seconds);
}

TEST(LstmLayerPersistent, InferenceEqualsTrainingForwardBitwise) {
  const Problem p({24, 64, 32, 0.5f, 0.3f}, 5, 3, 500);
  LstmLayerWorkspace ws;
  const Forward train = run_forward(p, LstmKernel::kPersistent, &ws, true);
  const Forward infer = run_forward(p, LstmKernel::kPersistent, nullptr, false);
  EXPECT_EQ(infer.y, train.y);
  EXPECT_EQ(infer.h_last, train.h_last);
  EXPECT_EQ(infer.c_last, train.c_last);
}

TEST(LstmLayerPersistent, AutoIsTheStandardPathUntilVerifiedOnAGpu) {
  const Problem p({24, 64, 32, 0.5f, 0.3f}, 3, 2, 600);
  LstmLayerWorkspace ws_auto, ws_std;
  const Forward a = run_forward(p, LstmKernel::kAuto, &ws_auto, true);
  const Forward s = run_forward(p, LstmKernel::kStandard, &ws_std, true);
  EXPECT_EQ(a.y, s.y);
  EXPECT_EQ(a.c_last, s.c_last);
}

TEST(LstmLayerPersistent, UnsupportedShapesAreErrorsWithTheReason) {
  const Problem plain({8, 64, 0, 0.0f, 0.0f}, 2, 2, 700);
  std::vector<float> y(2 * 2 * 64);
  LstmLayerWeights w{plain.w_ih.data(), plain.w_hh.data(), plain.b.data(), nullptr};
  w.kernel = LstmKernel::kPersistent;
  std::string message = testing::error_of([&] {
    lstm_layer_forward(plain.shape, w, 2, 2, plain.x.data(), nullptr, nullptr, y.data(), nullptr,
                       nullptr, nullptr, false);
  });
  EXPECT_NE(message.find("persistent LSTM kernel"), std::string::npos) << message;
  EXPECT_NE(message.find("projection"), std::string::npos) << message;

  const Problem odd({8, 40, 16, 0.0f, 0.0f}, 2, 2, 701);
  std::vector<float> y2(2 * 2 * 16);
  message = testing::error_of([&] {
    lstm_layer_forward(odd.shape, odd.weights(LstmKernel::kPersistent), 2, 2, odd.x.data(), nullptr,
                       nullptr, y2.data(), nullptr, nullptr, nullptr, false);
  });
  EXPECT_NE(message.find("multiples of 16"), std::string::npos) << message;
}

TEST(LstmLayerPersistent, KernelNamesParse) {
  for (LstmKernel k : {LstmKernel::kStandard, LstmKernel::kPersistent, LstmKernel::kAuto})
    EXPECT_EQ(parse_lstm_kernel(lstm_kernel_name(k)), k);
  EXPECT_THROW(parse_lstm_kernel("cudnn"), UsageError);
}

}  // namespace
}  // namespace elmo
