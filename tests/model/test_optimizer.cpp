// Optimizer: PTB schedule, Adagrad dense + row-sparse against a double reference, global-norm
// clip over dense and sparse gradients, state tensors for checkpoints, config validation.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <map>

#include "model/optimizer.h"
#include "runtime/rng.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

void fill_random(Tensor& t, Rng& rng, float scale) {
  for (int64_t e = 0; e < t.numel(); ++e) t.data<float>()[e] = (rng.uniform() * 2 - 1) * scale;
}

// A store like the biLM's: one dense matrix, row-sparse embedding and softmax weight/bias.
struct Model {
  ParameterStore params;
  Model() {
    Rng rng(7, 0);
    fill_random(params.add("lstm.fwd.0.weight_ih", {6, 4}).value, rng, 1.0f);
    fill_random(params.add("embedding.weight", {10, 4}, true).value, rng, 1.0f);
    fill_random(params.add("softmax.weight", {10, 4}, true).value, rng, 1.0f);
    fill_random(params.add("softmax.bias", {10}, true).value, rng, 1.0f);
  }
  // Sets a gradient for every parameter; sparse ones touch `ids`.
  void set_grads(const std::vector<int32_t>& ids, uint64_t seed, float scale) {
    Rng rng(seed, 1);
    for (Parameter* p : params.all()) {
      if (!p->row_sparse) {
        fill_random(p->grad, rng, scale);
        continue;
      }
      p->sparse_grad.ids = ids;
      p->sparse_grad.values = Tensor::empty({static_cast<int64_t>(ids.size()), p->row_dim()});
      fill_random(p->sparse_grad.values, rng, scale);
    }
  }
  double grad_sum_of_squares() const {
    double s = 0.0;
    for (const Parameter* p : params.all()) {
      const Tensor& g = p->row_sparse ? p->sparse_grad.values : p->grad;
      if (!g.defined()) continue;
      for (float x : g.to_floats()) s += static_cast<double>(x) * x;
    }
    return s;
  }
};

// Double reference of the whole optimizer: values and accumulators by parameter name.
struct Reference {
  std::map<std::string, std::vector<double>> value, acc;
  explicit Reference(ParameterStore& params, double initial_acc) {
    for (Parameter* p : params.all()) {
      const auto v = p->value.to_floats();
      value[p->name].assign(v.begin(), v.end());
      acc[p->name].assign(v.size(), initial_acc);
    }
  }
  void step(ParameterStore& params, double lr, double eps, double clip) {
    double sq = 0.0;
    for (Parameter* p : params.all())
      for (float x : (p->row_sparse ? p->sparse_grad.values : p->grad).to_floats())
        sq += double(x) * x;
    const double norm = std::sqrt(sq);
    const double scale = clip > 0 && norm > clip ? clip / norm : 1.0;
    for (Parameter* p : params.all()) {
      auto& v = value[p->name];
      auto& a = acc[p->name];
      auto update = [&](int64_t at, float g) {
        const double gs = g * scale;
        a[at] += gs * gs;
        v[at] -= lr * gs / (std::sqrt(a[at]) + eps);
      };
      if (!p->row_sparse) {
        const auto g = p->grad.to_floats();
        for (size_t e = 0; e < g.size(); ++e) update(e, g[e]);
      } else {
        const auto g = p->sparse_grad.values.to_floats();
        const int64_t dim = p->row_dim();
        for (size_t k = 0; k < p->sparse_grad.ids.size(); ++k)
          for (int64_t c = 0; c < dim; ++c) update(p->sparse_grad.ids[k] * dim + c, g[k * dim + c]);
      }
    }
  }
};

TEST(Optimizer, PtbSmallLearningRateSchedule) {
  ParameterStore params;
  OptimizerOptions config;
  config.type = "sgd";
  config.learning_rate = 1.0f;
  config.lr_decay = 0.5f;
  config.decay_after_epochs = 4;
  Optimizer opt(params, config);
  for (int64_t epoch = 0; epoch < 4; ++epoch) EXPECT_EQ(opt.learning_rate(epoch), 1.0f) << epoch;
  EXPECT_EQ(opt.learning_rate(4), 0.5f);
  EXPECT_EQ(opt.learning_rate(5), 0.25f);
  EXPECT_EQ(opt.learning_rate(12), 1.0f / 512.0f);
  // Default (no decay): constant.
  Optimizer adagrad(params, OptimizerOptions{});
  EXPECT_EQ(adagrad.learning_rate(0), 0.2f);
  EXPECT_EQ(adagrad.learning_rate(9), 0.2f);
}

TEST(Optimizer, AdagradDenseAndSparseMatchReferenceAndSkipUntouchedRows) {
  Model model;
  OptimizerOptions config;  // adagrad, lr 0.2, acc 1.0, eps 1e-7, clip 10
  config.clip_norm = 0.0f;
  Optimizer opt(model.params, config);
  Reference ref(model.params, 1.0);
  std::map<std::string, std::vector<float>> before;
  for (Parameter* p : model.params.all()) before[p->name] = p->value.to_floats();

  const std::vector<std::vector<int32_t>> steps = {{1, 4, 9}, {0, 4}, {4, 7}};
  for (size_t s = 0; s < steps.size(); ++s) {
    model.set_grads(steps[s], 100 + s, 2.0f);
    ref.step(model.params, 0.2, 1e-7, 0.0);
    const auto stats = opt.step(0);
    EXPECT_EQ(stats.lr, 0.2f);
    EXPECT_EQ(stats.grad_scale, 1.0f);
    for (Parameter* p : model.params.all()) {  // gradients are zeroed
      if (p->row_sparse)
        EXPECT_TRUE(p->sparse_grad.ids.empty()) << p->name;
      else
        for (float g : p->grad.to_floats()) ASSERT_EQ(g, 0.0f) << p->name;
    }
  }
  std::map<std::string, Tensor> state;
  for (auto& [name, t] : opt.state_tensors()) state[name] = t;
  // f32 vs double over 3 steps on values of order 1.
  for (Parameter* p : model.params.all()) {
    const auto& rv = ref.value[p->name];
    const auto& ra = ref.acc[p->name];
    EXPECT_TRUE(testing::all_close(p->value.to_floats(), std::vector<float>(rv.begin(), rv.end()),
                                   1e-6f, 1e-5f))
        << p->name;
    const Tensor& acc = state.at(p->name + ".adagrad_acc");
    EXPECT_TRUE(
        testing::all_close(acc.to_floats(), std::vector<float>(ra.begin(), ra.end()), 1e-6f, 1e-5f))
        << p->name;
    if (!p->row_sparse) continue;
    const std::vector<float> now = p->value.to_floats(), acc_now = acc.to_floats();
    const int64_t dim = p->row_dim();
    for (int32_t r : {2, 3, 5, 6, 8}) {  // never touched: bitwise unchanged, acc still 1
      EXPECT_EQ(0, std::memcmp(&now[r * dim], &before[p->name][r * dim], dim * sizeof(float)))
          << p->name << " row " << r;
      for (int64_t c = 0; c < dim; ++c) EXPECT_EQ(acc_now[r * dim + c], 1.0f) << p->name;
    }
  }
}

TEST(Optimizer, ClipNormCoversDenseAndSparseGradients) {
  Model model;
  model.set_grads({2, 3}, 5, 1.0f);
  const double expected = std::sqrt(model.grad_sum_of_squares());
  OptimizerOptions config;
  Optimizer opt(model.params, config);
  EXPECT_NEAR(opt.global_grad_norm(), expected, 1e-12 * expected);
  // The sparse rows count: dropping them lowers the norm.
  model.params.get("softmax.bias").sparse_grad.clear();
  EXPECT_LT(opt.global_grad_norm(), expected);
}

TEST(Optimizer, ClipScalesOnlyAboveTheThresholdAndZeroTurnsItOff) {
  for (float clip : {0.5f, 1000.0f, 0.0f}) {
    Model model;
    OptimizerOptions config;
    config.clip_norm = clip;
    Optimizer opt(model.params, config);
    Reference ref(model.params, 1.0);
    model.set_grads({0, 5}, 9, 3.0f);
    const double norm = std::sqrt(model.grad_sum_of_squares());
    ref.step(model.params, 0.2, 1e-7, clip);
    const auto stats = opt.step(0);
    EXPECT_NEAR(stats.grad_norm, norm, 1e-12 * norm) << "pre-clip norm, clip " << clip;
    if (clip == 0.5f)
      EXPECT_NEAR(stats.grad_scale, 0.5 / norm, 1e-7) << "clipped";
    else
      EXPECT_EQ(stats.grad_scale, 1.0f) << "clip " << clip;
    for (Parameter* p : model.params.all()) {
      const auto& rv = ref.value[p->name];
      EXPECT_TRUE(testing::all_close(p->value.to_floats(), std::vector<float>(rv.begin(), rv.end()),
                                     1e-6f, 1e-5f))
          << p->name << " clip " << clip;
    }
  }
}

TEST(Optimizer, SgdUpdatesDenseAndTouchedRows) {
  Model model;
  OptimizerOptions config;
  config.type = "sgd";
  config.learning_rate = 1.0f;
  config.lr_decay = 0.5f;
  config.decay_after_epochs = 1;
  config.clip_norm = 0.0f;
  Optimizer opt(model.params, config);
  EXPECT_TRUE(opt.state_tensors().empty());
  std::map<std::string, std::vector<float>> before, grad;
  for (Parameter* p : model.params.all()) before[p->name] = p->value.to_floats();
  model.set_grads({3}, 4, 1.0f);
  for (Parameter* p : model.params.all())
    grad[p->name] = (p->row_sparse ? p->sparse_grad.values : p->grad).to_floats();
  EXPECT_EQ(opt.step(1).lr, 0.5f);  // epoch 1: one decay
  for (Parameter* p : model.params.all()) {
    const auto now = p->value.to_floats();
    const int64_t dim = p->row_dim();
    for (size_t e = 0; e < now.size(); ++e) {
      float expected = before[p->name][e];
      if (!p->row_sparse)
        expected -= 0.5f * grad[p->name][e];
      else if (static_cast<int64_t>(e) / dim == 3)
        expected -= 0.5f * grad[p->name][e % dim];
      EXPECT_EQ(now[e], expected) << p->name << " element " << e;
    }
  }
}

TEST(Optimizer, StateTensorsRoundTripAndBadNamesOrShapesAreErrors) {
  Model model;
  Optimizer opt(model.params, OptimizerOptions{});
  const auto state = opt.state_tensors();
  ASSERT_EQ(state.size(), 4u);
  EXPECT_EQ(state[0].first, "lstm.fwd.0.weight_ih.adagrad_acc");
  EXPECT_EQ(state[1].first, "embedding.weight.adagrad_acc");
  EXPECT_EQ(state[3].first, "softmax.bias.adagrad_acc");
  EXPECT_EQ(state[3].second.shape(), (Shape{10}));
  Tensor saved = Tensor::empty({10, 4});
  for (int64_t e = 0; e < 40; ++e) saved.data<float>()[e] = 1.0f + e;
  opt.load_state("embedding.weight.adagrad_acc", saved);
  EXPECT_EQ(opt.state_tensors()[1].second.to_floats(), saved.to_floats());
  EXPECT_THROW(opt.load_state("embedding.weight.momentum", saved), Error);
  EXPECT_THROW(opt.load_state("softmax.bias.adagrad_acc", saved), Error);
}

TEST(Optimizer, BadConfigIsAUsageErrorAndBadSparseGradIsAnError) {
  ParameterStore params;
  auto make = [&](auto edit) {
    OptimizerOptions config;
    edit(config);
    Optimizer opt(params, config);
  };
  EXPECT_THROW(make([](OptimizerOptions& c) { c.type = "adam"; }), UsageError);
  EXPECT_THROW(make([](OptimizerOptions& c) { c.learning_rate = 0; }), UsageError);
  EXPECT_THROW(make([](OptimizerOptions& c) { c.clip_norm = -1; }), UsageError);
  EXPECT_THROW(make([](OptimizerOptions& c) { c.lr_decay = 0; }), UsageError);
  EXPECT_THROW(make([](OptimizerOptions& c) { c.decay_after_epochs = -1; }), UsageError);
  EXPECT_THROW(make([](OptimizerOptions& c) {
                 c.initial_accumulator = 0;
                 c.epsilon = 0;
               }),
               UsageError);

  Model model;
  Optimizer opt(model.params, OptimizerOptions{});
  model.set_grads({4, 2}, 1, 1.0f);  // not ascending
  EXPECT_THROW(opt.step(0), Error);
  model.set_grads({2, 10}, 1, 1.0f);  // out of range
  EXPECT_THROW(opt.step(0), Error);
}

}  // namespace
}  // namespace elmo
