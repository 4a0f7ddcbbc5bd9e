// LSTMP stack of one direction: parameter registration and init, forward semantics (dropout
// sites, residual of the dropped input, top dropout) against a manual composition of layers,
// finite-difference gradients with residuals and dropout, state carrying, inference mode and
// changing T / B.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernels/dropout.h"
#include "model/lstm_stack.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

const LstmStackShape kShape{5, 4, 3, 2, 3.0f, 3.0f, true};  // E=5, C=4, P=3, L=2

std::vector<float> random_floats(uint64_t seed, int64_t n, float scale) {
  Rng rng(seed, kRngSynthetic);
  std::vector<float> v(n);
  for (float& e : v) e = scale * (2.0f * rng.uniform() - 1.0f);
  return v;
}

struct Fixture {
  ParameterStore store;
  LstmStackShape shape;
  Fixture(const LstmStackShape& s, const std::string& direction, float init_scale, uint64_t seed)
      : shape(s) {
    register_lstm_parameters(store, direction, s);
    Rng rng(seed, kRngInit);
    init_lstm_parameters(store, direction, s, init_scale, rng);
  }
};

TEST(LstmStack, RegistersNamedParametersAndInitialises) {
  Fixture f(kShape, "bwd", 0.1f, 1);
  ASSERT_EQ(f.store.size(), 8u);
  EXPECT_EQ(f.store.all()[0]->name, "lstm.bwd.0.weight_ih");
  EXPECT_EQ(f.store.all()[3]->name, "lstm.bwd.0.weight_hr");
  EXPECT_EQ(f.store.get("lstm.bwd.0.weight_ih").value.shape(), Shape({16, 5}));
  EXPECT_EQ(f.store.get("lstm.bwd.1.weight_ih").value.shape(), Shape({16, 3}));
  EXPECT_EQ(f.store.get("lstm.bwd.1.weight_hh").value.shape(), Shape({16, 3}));
  EXPECT_EQ(f.store.get("lstm.bwd.1.bias").value.shape(), Shape({16}));
  EXPECT_EQ(f.store.get("lstm.bwd.1.weight_hr").value.shape(), Shape({3, 4}));
  const std::vector<float> bias = f.store.get("lstm.bwd.1.bias").value.to_floats();
  for (int k = 0; k < 16; ++k) EXPECT_EQ(bias[k], k >= 4 && k < 8 ? 1.0f : 0.0f) << k;
  const std::vector<float> w = f.store.get("lstm.bwd.0.weight_hh").value.to_floats();
  float lo = 1, hi = -1;
  for (float v : w) lo = std::min(lo, v), hi = std::max(hi, v);
  EXPECT_GE(lo, -0.1f);
  EXPECT_LE(hi, 0.1f);
  EXPECT_LT(lo, -0.05f);  // actually spread over the range
  EXPECT_GT(hi, 0.05f);
  // Same seed, same values.
  Fixture g(kShape, "bwd", 0.1f, 1);
  EXPECT_EQ(g.store.get("lstm.bwd.0.weight_hh").value.to_floats(), w);

  ParameterStore plain;
  register_lstm_parameters(plain, "fwd", {8, 6, 0, 1, 0.0f, 0.0f, false});
  EXPECT_EQ(plain.size(), 3u);
  EXPECT_FALSE(plain.has("lstm.fwd.0.weight_hr"));
  EXPECT_EQ(plain.get("lstm.fwd.0.weight_hh").value.shape(), Shape({24, 6}));
  EXPECT_THROW(register_lstm_parameters(plain, "left", kShape), UsageError);
  EXPECT_THROW(register_lstm_parameters(plain, "bwd", {8, 0, 0, 1, 0, 0, false}), UsageError);
}

// The stack equals layers + dropout composed by hand with the documented sites and residuals.
TEST(LstmStack, ForwardMatchesManualComposition) {
  for (const char* dir : {"fwd", "bwd"}) {
    Fixture f(kShape, dir, 0.5f, 2);
    LstmStack stack(f.store, dir, kShape);
    const int64_t T = 4, B = 3, E = 5, H = 3, C = 4;
    const std::vector<float> x = random_floats(3, T * B * E, 1.0f);
    const std::vector<float> h0 = random_floats(4, 2 * B * H, 0.5f);
    const std::vector<float> c0 = random_floats(5, 2 * B * C, 0.5f);
    const LstmStackRun run{true, 0.25f, 77, 9};
    std::vector<float> h_last(2 * B * H), c_last(2 * B * C);
    stack.forward(T, B, x.data(), h0.data(), c0.data(), h_last.data(), c_last.data(), run);

    const int d = std::string(dir) == "fwd" ? 0 : 1;
    auto params = [&](uint32_t site) {
      return DropoutParams{0.25f, 77, dropout_stream(9, d * 64 + site), {}};
    };
    auto w = [&](int l) {
      auto p = [&](const char* what) {
        return f.store.get(lstm_parameter_name(dir, l, what)).value.data<float>();
      };
      return LstmLayerWeights{p("weight_ih"), p("weight_hh"), p("bias"), p("weight_hr")};
    };
    std::vector<float> x0(T * B * E), y0(T * B * H), x1(T * B * H), y1(T * B * H), out1(T * B * H),
        top(T * B * H), h(2 * B * H), c(2 * B * C);
    dropout(Device::cpu(), x.data(), x0.data(), x0.size(), params(0));
    lstm_layer_forward(kShape.layer(0), w(0), T, B, x0.data(), h0.data(), c0.data(), y0.data(),
                       h.data(), c.data(), nullptr, false);
    dropout(Device::cpu(), y0.data(), x1.data(), x1.size(), params(1));
    lstm_layer_forward(kShape.layer(1), w(1), T, B, x1.data(), h0.data() + B * H, c0.data() + B * C,
                       y1.data(), h.data() + B * H, c.data() + B * C, nullptr, false);
    for (size_t e = 0; e < out1.size(); ++e) out1[e] = y1[e] + x1[e];  // the dropped input
    dropout(Device::cpu(), out1.data(), top.data(), top.size(), params(63));

    const int64_t n = T * B * H;
    // Bitwise: the same operations in the same order.
    EXPECT_EQ(std::vector<float>(stack.layer_output(0), stack.layer_output(0) + n), y0);
    EXPECT_EQ(std::vector<float>(stack.layer_output(1), stack.layer_output(1) + n), out1);
    EXPECT_EQ(std::vector<float>(stack.output(), stack.output() + n), top);
    EXPECT_EQ(h_last, h);
    EXPECT_EQ(c_last, c);
  }
}

// FD check of every parameter and of d(input) through 2 layers with residual and dropout on
// (fixed seed, so the masks are the same in every FD evaluation).
void check_stack_gradients(const LstmStackShape& shape, float dropout) {
  Fixture f(shape, "fwd", 0.6f, 7);
  LstmStack stack(f.store, "fwd", shape);
  const int64_t T = 4, B = 2, E = shape.embedding_dim, H = shape.hidden(), L = shape.layers;
  std::vector<float> x = random_floats(8, T * B * E, 1.0f);
  const std::vector<float> h0 = random_floats(9, L * B * H, 0.5f);
  const std::vector<float> c0 = random_floats(10, L * B * shape.cell_size, 0.5f);
  const std::vector<float> r = random_floats(11, T * B * H, 1.0f);
  const LstmStackRun run{true, dropout, 1234, 5};
  auto loss = [&]() {
    stack.forward(T, B, x.data(), h0.data(), c0.data(), nullptr, nullptr, run);
    double sum = 0;
    for (int64_t e = 0; e < T * B * H; ++e) sum += static_cast<double>(stack.output()[e]) * r[e];
    return sum;
  };
  f.store.zero_grads();
  loss();
  std::vector<float> dx(T * B * E);
  stack.backward(r.data(), dx.data());
  // f32 forward, central differences with eps 1e-2: truncation ~1e-5 and rounding noise
  // ~1e-7 * |loss| / eps ~ 1e-5, against gradients of O(0.1..1): 1e-2 relative is tight for
  // this precision while any wrong term (O(1e-1)) fails.
  for (Parameter* p : f.store.all()) {
    std::vector<float> analytic = p->grad.to_floats();
    EXPECT_TRUE(testing::gradient_matches(loss, p->value.data<float>(), analytic.data(),
                                          p->value.numel(), 1e-2, 1e-2, 1000))
        << p->name;
  }
  EXPECT_TRUE(testing::gradient_matches(loss, x.data(), dx.data(), x.size(), 1e-2, 1e-2, 1000))
      << "d input";
}

TEST(LstmStack, GradientsWithResidualAndDropout) { check_stack_gradients(kShape, 0.3f); }

TEST(LstmStack, GradientsWithoutDropoutOrResidual) {
  LstmStackShape s = kShape;
  s.skip_connections = false;
  check_stack_gradients(s, 0.0f);
}

TEST(LstmStack, GradientsWithoutProjection) {
  check_stack_gradients({5, 4, 0, 2, 0.0f, 0.0f, true}, 0.2f);
}

TEST(LstmStack, GradientsAccumulateAcrossBackwards) {
  Fixture f(kShape, "fwd", 0.5f, 12);
  LstmStack stack(f.store, "fwd", kShape);
  const int64_t T = 3, B = 2;
  const std::vector<float> x = random_floats(13, T * B * 5, 1.0f);
  const std::vector<float> r = random_floats(14, T * B * 3, 1.0f);
  const LstmStackRun run{true, 0.1f, 3, 3};
  stack.forward(T, B, x.data(), nullptr, nullptr, nullptr, nullptr, run);
  stack.backward(r.data(), nullptr);
  const std::vector<float> once = f.store.get("lstm.fwd.1.weight_hh").grad.to_floats();
  stack.forward(T, B, x.data(), nullptr, nullptr, nullptr, nullptr, run);
  stack.backward(r.data(), nullptr);
  const std::vector<float> twice = f.store.get("lstm.fwd.1.weight_hh").grad.to_floats();
  for (size_t e = 0; e < once.size(); ++e) EXPECT_FLOAT_EQ(twice[e], 2 * once[e]);
  EXPECT_THROW(stack.backward(r.data(), nullptr), Error);  // consumed
}

// Carrying (h, c) of every layer across two halves equals one run over all T steps
// (the input GEMMs cover different row counts: f32 rounding, 1e-6).
TEST(LstmStack, TwoHalvesWithCarriedStateEqualWhole) {
  Fixture f(kShape, "fwd", 0.5f, 15);
  LstmStack stack(f.store, "fwd", kShape);
  const int64_t T = 6, B = 3, E = 5, H = 3, C = 4, L = 2;
  const std::vector<float> x = random_floats(16, T * B * E, 1.0f);
  const LstmStackRun infer{};
  std::vector<float> h(L * B * H), c(L * B * C);
  stack.forward(T, B, x.data(), nullptr, nullptr, h.data(), c.data(), infer);
  const std::vector<float> whole(stack.output(), stack.output() + T * B * H);

  std::vector<float> h2(L * B * H, 0.0f), c2(L * B * C, 0.0f), halves;
  for (int64_t start : {int64_t{0}, int64_t{2}}) {
    const int64_t steps = start == 0 ? 2 : 4;
    stack.forward(steps, B, x.data() + start * B * E, h2.data(), c2.data(), h2.data(), c2.data(),
                  infer);
    halves.insert(halves.end(), stack.output(), stack.output() + steps * B * H);
  }
  EXPECT_TRUE(testing::all_close(halves, whole, 1e-6f, 1e-6f));
  EXPECT_TRUE(testing::all_close(h2, h, 1e-6f, 1e-6f));
  EXPECT_TRUE(testing::all_close(c2, c, 1e-6f, 1e-6f));
}

TEST(LstmStack, InferenceEqualsTrainingWithoutDropoutAndShapesMayChange) {
  Fixture f(kShape, "fwd", 0.5f, 17);
  LstmStack stack(f.store, "fwd", kShape);
  const int64_t H = 3;
  const std::vector<float> x = random_floats(18, 7 * 3 * 5, 1.0f);
  const std::vector<float> r = random_floats(19, 4 * 2 * H, 1.0f);
  // Training step (T=4, B=2), then inference with other sizes, then the same training step:
  // the results must not depend on what ran in between.
  stack.forward(4, 2, x.data(), nullptr, nullptr, nullptr, nullptr, {true, 0.0f, 1, 1});
  const std::vector<float> train(stack.output(), stack.output() + 4 * 2 * H);
  std::vector<float> dx1(4 * 2 * 5);
  stack.backward(r.data(), dx1.data());
  const std::vector<float> g1 = f.store.get("lstm.fwd.0.weight_ih").grad.to_floats();

  stack.forward(7, 3, x.data(), nullptr, nullptr, nullptr, nullptr, {});
  stack.forward(4, 2, x.data(), nullptr, nullptr, nullptr, nullptr, {});
  EXPECT_EQ(std::vector<float>(stack.output(), stack.output() + 4 * 2 * H), train);
  EXPECT_EQ(stack.output(), stack.layer_output(1));        // no top dropout in inference
  EXPECT_THROW(stack.backward(r.data(), nullptr), Error);  // inference saved nothing

  f.store.zero_grads();
  stack.forward(4, 2, x.data(), nullptr, nullptr, nullptr, nullptr, {true, 0.0f, 1, 1});
  std::vector<float> dx2(dx1.size());
  stack.backward(r.data(), dx2.data());
  EXPECT_EQ(dx2, dx1);
  EXPECT_EQ(f.store.get("lstm.fwd.0.weight_ih").grad.to_floats(), g1);
}

TEST(LstmStack, DropoutDependsOnSeedStepAndDirection) {
  Fixture ff(kShape, "fwd", 0.5f, 20);
  Fixture fb(kShape, "bwd", 0.5f, 20);  // same weights, other direction
  LstmStack fwd(ff.store, "fwd", kShape), bwd(fb.store, "bwd", kShape);
  const int64_t n = 3 * 2 * 3;
  const std::vector<float> x = random_floats(21, 3 * 2 * 5, 1.0f);
  auto out = [&](LstmStack& s, LstmStackRun run) {
    s.forward(3, 2, x.data(), nullptr, nullptr, nullptr, nullptr, run);
    return std::vector<float>(s.output(), s.output() + n);
  };
  const std::vector<float> a = out(fwd, {true, 0.5f, 1, 1});
  EXPECT_EQ(out(fwd, {true, 0.5f, 1, 1}), a);
  EXPECT_NE(out(fwd, {true, 0.5f, 1, 2}), a);
  EXPECT_NE(out(fwd, {true, 0.5f, 2, 1}), a);
  EXPECT_NE(out(bwd, {true, 0.5f, 1, 1}), a);
  EXPECT_EQ(out(fwd, {false, 0.5f, 1, 1}), out(bwd, {false, 0.5f, 1, 1}));  // no dropout
}

TEST(LstmStack, MisuseIsAnError) {
  Fixture f(kShape, "fwd", 0.5f, 22);
  EXPECT_THROW(LstmStack(f.store, "bwd", kShape), Error);  // not registered
  LstmStackShape other = kShape;
  other.cell_size = 5;
  EXPECT_THROW(LstmStack(f.store, "fwd", other), Error);  // shapes disagree
  LstmStack stack(f.store, "fwd", kShape);
  std::vector<float> x(2 * 5), d(2 * 3);
  EXPECT_THROW(stack.backward(d.data(), nullptr), Error);
  EXPECT_THROW(
      stack.forward(1, 2, x.data(), nullptr, nullptr, nullptr, nullptr, {true, 1.0f, 0, 0}), Error);
  EXPECT_THROW(stack.layer_output(2), Error);
}

}  // namespace
}  // namespace elmo
