// CPU row kernels of the sampled softmax against a double-precision reference.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernels/sampled_softmax.h"
#include "runtime/rng.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

struct RowsCase {
  int64_t n = 0, s = 0;
  std::vector<float> logits, true_logits, correction;
  std::vector<int32_t> ids, targets;
};

// Random case whose targets hit a sample in every third row (accidental hits).
RowsCase make_case(int64_t n, int64_t s, float spread, uint64_t seed) {
  RowsCase c;
  c.n = n;
  c.s = s;
  Rng rng(seed, kRngSynthetic);
  for (int64_t i = 0; i < n * s; ++i) c.logits.push_back(spread * rng.normal());
  for (int64_t r = 0; r < n; ++r) c.true_logits.push_back(spread * rng.normal());
  for (int64_t j = 0; j < s; ++j) {
    c.correction.push_back(rng.normal());
    c.ids.push_back(static_cast<int32_t>(3 * j + 1));  // distinct
  }
  for (int64_t r = 0; r < n; ++r)
    c.targets.push_back(r % 3 == 0 ? c.ids[(r * 5) % s] : static_cast<int32_t>(3 * s + r));
  return c;
}

// Reference: loss and gradients (scale * dNLL/dz) in double.
void reference(const RowsCase& c, double scale, std::vector<double>& loss, std::vector<double>& dz,
               std::vector<double>& dtrue) {
  loss.assign(c.n, 0.0);
  dz.assign(c.n * c.s, 0.0);
  dtrue.assign(c.n, 0.0);
  for (int64_t r = 0; r < c.n; ++r) {
    const double zt = c.true_logits[r];
    double max = zt;
    for (int64_t j = 0; j < c.s; ++j)
      if (c.ids[j] != c.targets[r])
        max = std::max(max, static_cast<double>(c.logits[r * c.s + j]) + c.correction[j]);
    double sum = std::exp(zt - max);
    for (int64_t j = 0; j < c.s; ++j)
      if (c.ids[j] != c.targets[r])
        sum += std::exp(static_cast<double>(c.logits[r * c.s + j]) + c.correction[j] - max);
    const double lse = max + std::log(sum);
    loss[r] = lse - zt;
    for (int64_t j = 0; j < c.s; ++j)
      if (c.ids[j] != c.targets[r])
        dz[r * c.s + j] =
            scale * std::exp(static_cast<double>(c.logits[r * c.s + j]) + c.correction[j] - lse);
    dtrue[r] = scale * (std::exp(zt - lse) - 1.0);
  }
}

std::vector<float> to_float(const std::vector<double>& v) { return {v.begin(), v.end()}; }

TEST(SampledSoftmaxRows, LossAndGradientMatchDoubleReferenceWithHitsMasked) {
  for (const float spread : {1.0f, 30.0f}) {  // 30: large logits exercise the max shift
    RowsCase c = make_case(37, 101, spread, 11);
    std::vector<double> loss, dz, dtrue;
    reference(c, 0.37, loss, dz, dtrue);
    std::vector<float> out_loss(c.n);
    SampledSoftmaxRowsParams params{c.n, c.s, 0.37f, true};
    sampled_softmax_rows(Device::cpu(), c.logits.data(), c.true_logits.data(), c.correction.data(),
                         c.ids.data(), c.targets.data(), out_loss.data(), params);
    // f32 logits and exp: relative 1e-5, absolute 1e-5 on losses of O(1..100).
    EXPECT_TRUE(testing::all_close(out_loss, to_float(loss), 1e-5f, 1e-5f)) << spread;
    EXPECT_TRUE(testing::all_close(c.logits, to_float(dz), 1e-6f, 1e-5f)) << spread;
    EXPECT_TRUE(testing::all_close(c.true_logits, to_float(dtrue), 1e-6f, 1e-5f)) << spread;
    for (int64_t r = 0; r < c.n; ++r)
      for (int64_t j = 0; j < c.s; ++j)
        if (c.ids[j] == c.targets[r]) {
          EXPECT_EQ(c.logits[r * c.s + j], 0.0f);  // masked hit
        }
  }
}

TEST(SampledSoftmaxRows, LossOnlyLeavesInputsAndGivesTheSameLoss) {
  RowsCase c = make_case(9, 40, 2.0f, 5);
  const RowsCase saved = c;
  std::vector<float> loss_only(c.n), loss_grad(c.n);
  sampled_softmax_rows(Device::cpu(), c.logits.data(), c.true_logits.data(), c.correction.data(),
                       c.ids.data(), c.targets.data(), loss_only.data(), {c.n, c.s, 1.0f, false});
  EXPECT_EQ(c.logits, saved.logits);
  EXPECT_EQ(c.true_logits, saved.true_logits);
  sampled_softmax_rows(Device::cpu(), c.logits.data(), c.true_logits.data(), c.correction.data(),
                       c.ids.data(), c.targets.data(), loss_grad.data(), {c.n, c.s, 1.0f, true});
  // Same operations except the stored intermediate: equal to f32 rounding.
  EXPECT_TRUE(testing::all_close(loss_only, loss_grad, 1e-6f, 1e-6f));
}

TEST(SampledSoftmaxRows, TargetLogitsSubtractTheTargetsLogExpectedCount) {
  const int64_t vocab = 50, dim = 13, n = 6, tries = 77;
  Rng rng(2, kRngSynthetic);
  std::vector<float> weight(vocab * dim), bias(vocab), h(n * dim), out(n);
  for (auto& v : weight) v = rng.normal();
  for (auto& v : bias) v = rng.normal();
  for (auto& v : h) v = rng.normal();
  const std::vector<int32_t> targets = {0, 49, 7, 7, 3, 21};
  sampled_softmax_target_logits(Device::cpu(), weight.data(), bias.data(), h.data(), targets.data(),
                                n, dim, tries, vocab, out.data());
  for (int64_t r = 0; r < n; ++r) {
    double dot = bias[targets[r]];
    for (int64_t d = 0; d < dim; ++d)
      dot += static_cast<double>(h[r * dim + d]) * weight[targets[r] * dim + d];
    const double p = log_uniform_prob(targets[r], vocab);
    const double expected = dot - std::log(1.0 - std::pow(1.0 - p, tries));
    EXPECT_NEAR(out[r], expected, 1e-5 * std::max(1.0, std::fabs(expected))) << r;
  }
}

// The per-sample correction b[s_j] - log E(s_j): one f32 subtraction per sample, nothing
// written past S (and nothing at all for S = 0).
TEST(SampledSoftmaxRows, CorrectionsAreBiasMinusLogExpectedCount) {
  const std::vector<float> bias = {0.5f, -1.25f, 3.0f, 0.1f, 7.0f};
  const std::vector<int32_t> ids = {4, 0, 2};
  const std::vector<float> log_expected = {-2.0f, 0.25f, 1.0e-3f};
  std::vector<float> correction(4, 99.0f);
  sampled_softmax_corrections(Device::cpu(), bias.data(), ids.data(), log_expected.data(), 3,
                              correction.data());
  EXPECT_EQ(correction, (std::vector<float>{9.0f, 0.25f, 3.0f - 1.0e-3f, 99.0f}));
  sampled_softmax_corrections(Device::cpu(), bias.data(), ids.data(), log_expected.data(), 0,
                              correction.data());
  EXPECT_EQ(correction[0], 9.0f);
}

// The samples' bias gradient on the CPU: rows added in ascending order into db (what the CPU layer
// has always computed), checked bitwise against that order and against an exact sum.
TEST(SampledSoftmaxRows, SampleBiasGradAddsTheRowsInOrder) {
  const int64_t n = 37, s = 1500;  // more columns than one thread's share
  Rng rng(6, kRngSynthetic);
  std::vector<float> dlogits(n * s);
  for (auto& v : dlogits) v = rng.normal();
  std::vector<double> db(s), ordered(s), exact(s);
  for (int64_t j = 0; j < s; ++j) db[j] = ordered[j] = exact[j] = 0.5 * j;
  sampled_softmax_sample_bias_grad(Device::cpu(), dlogits.data(), n, s, db.data());
  for (int64_t r = 0; r < n; ++r)
    for (int64_t j = 0; j < s; ++j) ordered[j] += dlogits[r * s + j];
  for (int64_t j = 0; j < s; ++j) {
    long double sum = exact[j];
    for (int64_t r = 0; r < n; ++r) sum += dlogits[r * s + j];
    exact[j] = static_cast<double>(sum);
  }
  EXPECT_EQ(db, ordered);
  for (int64_t j = 0; j < s; ++j) ASSERT_NEAR(db[j], exact[j], 1e-12 * (1.0 + std::fabs(exact[j])));
  sampled_softmax_sample_bias_grad(Device::cpu(), dlogits.data(), 0, s, db.data());  // no rows
  EXPECT_EQ(db, ordered);
}

}  // namespace
}  // namespace elmo
