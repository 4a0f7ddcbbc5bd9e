// CPU chunk kernels of the full softmax: the online merge over chunks (with a tail chunk)
// against a one-pass double log-sum-exp, and the chunk gradient.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernels/full_softmax.h"
#include "runtime/rng.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

TEST(FullSoftmaxChunks, OnlineMergeMatchesOnePassWithTailChunk) {
  const int64_t n = 5, vocab = 103, chunk = 16;  // 6 full chunks + tail of 7
  Rng rng(4, kRngSynthetic);
  std::vector<float> logits(n * vocab), bias(vocab);
  for (auto& v : logits) v = 8.0f * rng.normal();
  for (auto& v : bias) v = rng.normal();
  const std::vector<int32_t> targets = {0, 102, 50, kIgnoreTarget, 96};
  std::vector<float> row_max(n, -INFINITY), target_logit(n, 0.0f);
  std::vector<double> row_sum(n, 0.0);
  for (int64_t begin = 0; begin < vocab; begin += chunk) {
    const int64_t c = std::min(chunk, vocab - begin);
    full_softmax_chunk_lse(Device::cpu(), logits.data() + begin, vocab, bias.data() + begin,
                           targets.data(), n, c, begin, row_max.data(), row_sum.data(),
                           target_logit.data());
  }
  for (int64_t r = 0; r < n; ++r) {
    if (targets[r] < 0) {
      EXPECT_EQ(row_sum[r], 0.0);  // ignored rows are untouched
      continue;
    }
    double max = -INFINITY, sum = 0.0;
    for (int64_t k = 0; k < vocab; ++k)
      max = std::max(max, double(logits[r * vocab + k]) + bias[k]);
    for (int64_t k = 0; k < vocab; ++k)
      sum += std::exp(double(logits[r * vocab + k]) + bias[k] - max);
    const double lse = max + std::log(sum);
    // f32 logits + bias and f32 exp per chunk: 1e-5 relative.
    EXPECT_NEAR(row_max[r] + std::log(row_sum[r]), lse, 1e-5 * std::fabs(lse) + 1e-5) << r;
    EXPECT_FLOAT_EQ(target_logit[r], logits[r * vocab + targets[r]] + bias[targets[r]]);
  }
}

TEST(FullSoftmaxChunks, GradientIsScaledSoftmaxMinusOneHot) {
  const int64_t n = 3, chunk = 10, begin = 20;
  Rng rng(8, kRngSynthetic);
  std::vector<float> logits(n * chunk), bias(chunk);
  for (auto& v : logits) v = rng.normal();
  for (auto& v : bias) v = rng.normal();
  const std::vector<int32_t> targets = {25, 3, kIgnoreTarget};
  const std::vector<float> lse = {2.5f, 3.0f, 1.0f};
  std::vector<float> expected(n * chunk, 0.0f);
  for (int64_t r = 0; r < 2; ++r)
    for (int64_t j = 0; j < chunk; ++j)
      expected[r * chunk + j] =
          static_cast<float>(0.5 * (std::exp(double(logits[r * chunk + j]) + bias[j] - lse[r]) -
                                    (begin + j == targets[r] ? 1.0 : 0.0)));
  full_softmax_chunk_grad(Device::cpu(), logits.data(), chunk, bias.data(), targets.data(),
                          lse.data(), n, chunk, begin, 0.5f);
  EXPECT_TRUE(testing::all_close(logits, expected, 1e-6f, 1e-5f));  // f32 expf
}

TEST(FullSoftmaxChunks, MergeOfEmptyStateTakesTheChunk) {
  float max = -INFINITY;
  double sum = 0.0;
  log_sum_exp_merge(max, sum, 3.0f, 2.0);
  EXPECT_EQ(max, 3.0f);
  EXPECT_EQ(sum, 2.0);
  log_sum_exp_merge(max, sum, 1.0f, 1.0);  // smaller chunk max
  EXPECT_NEAR(max + std::log(sum), std::log(2.0 * std::exp(3.0) + std::exp(1.0)), 1e-12);
  log_sum_exp_merge(max, sum, 10.0f, 1.0);  // larger chunk max rescales the state
  EXPECT_NEAR(max + std::log(sum), std::log(2.0 * std::exp(3.0) + std::exp(1.0) + std::exp(10.0)),
              1e-12);
}

// The finish after the last chunk: lse of every row with a target, NLL summed in row order, the
// count; rows with kIgnoreTarget keep their lse and are not counted.
TEST(FullSoftmaxChunks, FinishSumsTheNllOfTheRowsWithTargets) {
  const std::vector<float> row_max = {2.0f, -1.0f, 5.0f, 0.5f};
  const std::vector<double> row_sum = {3.0, 1.5, 9.0, 1.0};
  const std::vector<float> target_logit = {1.0f, -2.0f, 0.0f, 0.25f};
  const std::vector<int32_t> targets = {4, kIgnoreTarget, 0, 2};
  std::vector<float> lse(4, -9.0f);
  double result[2] = {-1.0, -1.0};
  full_softmax_finish(Device::cpu(), row_max.data(), row_sum.data(), target_logit.data(),
                      targets.data(), 4, lse.data(), result);
  double nll = 0.0;
  for (const int r : {0, 2, 3}) {
    const double row_lse = row_max[r] + std::log(row_sum[r]);
    EXPECT_EQ(lse[r], static_cast<float>(row_lse)) << r;
    nll += row_lse - target_logit[r];
  }
  EXPECT_EQ(lse[1], -9.0f);
  EXPECT_NEAR(result[0], nll, 1e-12 * std::fabs(nll));
  EXPECT_EQ(result[1], 3.0);
}

// The optional per-row output: each counted row's NLL (the very addend of result[0], so the row
// values summed in row order give result[0] exactly), NaN for the rows without a target; the
// lse and the sums are the same with or without it.
TEST(FullSoftmaxChunks, FinishWritesEachRowsNllAndNanForRowsWithoutTarget) {
  const std::vector<float> row_max = {2.0f, -1.0f, 5.0f, 0.5f, 1.5f};
  const std::vector<double> row_sum = {3.0, 1.5, 9.0, 1.0, 2.5};
  const std::vector<float> target_logit = {1.0f, -2.0f, 0.0f, 0.25f, 1.0f};
  const std::vector<int32_t> targets = {4, kIgnoreTarget, 0, 2, kIgnoreTarget};
  std::vector<float> lse(5, -9.0f), lse_without(5, -9.0f);
  std::vector<double> row_nll(5, -7.0);
  double result[2] = {-1.0, -1.0}, result_without[2] = {-1.0, -1.0};
  full_softmax_finish(Device::cpu(), row_max.data(), row_sum.data(), target_logit.data(),
                      targets.data(), 5, lse.data(), result, row_nll.data());
  full_softmax_finish(Device::cpu(), row_max.data(), row_sum.data(), target_logit.data(),
                      targets.data(), 5, lse_without.data(), result_without);
  double in_order = 0.0;
  for (const int r : {0, 2, 3}) {
    const double row_lse = static_cast<double>(row_max[r]) + std::log(row_sum[r]);
    EXPECT_EQ(row_nll[r], row_lse - target_logit[r]) << r;
    in_order += row_nll[r];
  }
  EXPECT_TRUE(std::isnan(row_nll[1]));
  EXPECT_TRUE(std::isnan(row_nll[4]));
  EXPECT_EQ(result[0], in_order);
  EXPECT_EQ(result[0], result_without[0]);
  EXPECT_EQ(result[1], 3.0);
  EXPECT_EQ(result_without[1], 3.0);
  EXPECT_EQ(lse, lse_without);
}

}  // namespace
}  // namespace elmo
