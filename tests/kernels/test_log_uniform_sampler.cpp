#include <gtest/gtest.h>

#include <cmath>
#include <set>
#include <string>

#include "kernels/log_uniform_sampler.h"
#include "runtime/error.h"

namespace elmo {
namespace {

TEST(LogUniformSampler, ProbabilitiesSumToOneAndDecrease) {
  const int64_t vocab = 1000;
  double total = 0.0;
  for (int64_t k = 0; k < vocab; ++k) {
    total += log_uniform_prob(k, vocab);
    if (k > 0) {
      EXPECT_LT(log_uniform_prob(k, vocab), log_uniform_prob(k - 1, vocab));
    }
  }
  // Telescoping sum: exactly 1 up to double rounding of 1000 terms.
  EXPECT_NEAR(total, 1.0, 1e-12);
}

TEST(LogUniformSampler, DrawIsInRangeAtTheEndsOfTheUnitInterval) {
  EXPECT_EQ(log_uniform_draw(0.0, 50), 0);
  EXPECT_EQ(log_uniform_draw(std::nextafter(1.0, 0.0), 50), 49);
  EXPECT_EQ(log_uniform_draw(0.999999999999, 7), 6);
}

TEST(LogUniformSampler, DrawFrequenciesFollowTheDistribution) {
  const int64_t vocab = 100, draws = 2000000;
  Rng rng(12345, kRngSampler);
  std::vector<int64_t> counts(vocab, 0);
  for (int64_t i = 0; i < draws; ++i) ++counts[log_uniform_draw(rng.uniform_double(), vocab)];
  for (int64_t k = 0; k < vocab; ++k) {
    const double p = log_uniform_prob(k, vocab);
    const double mean = draws * p, sd = std::sqrt(draws * p * (1.0 - p));
    // 5 standard deviations: with 100 bins a false alarm has probability ~6e-5 (fixed seed).
    EXPECT_NEAR(static_cast<double>(counts[k]), mean, 5.0 * sd) << "id " << k;
  }
}

TEST(LogUniformSampler, UniqueSamplesAreDistinctInRangeWithCorrectExpectedCounts) {
  const int64_t vocab = 1000, samples = 64;
  Rng rng(7, kRngSampler);
  const SampleSet set = sample_log_uniform_unique(vocab, samples, rng);
  ASSERT_EQ(static_cast<int64_t>(set.ids.size()), samples);
  ASSERT_EQ(static_cast<int64_t>(set.log_expected.size()), samples);
  EXPECT_GE(set.tries, samples);
  std::set<int32_t> distinct(set.ids.begin(), set.ids.end());
  EXPECT_EQ(static_cast<int64_t>(distinct.size()), samples);
  for (int64_t j = 0; j < samples; ++j) {
    const int32_t id = set.ids[j];
    EXPECT_GE(id, 0);
    EXPECT_LT(id, vocab);
    // Direct computation: expected count = 1 - (1 - p)^tries (long double, no expm1/log1p).
    const long double p =
        (std::log(static_cast<long double>(id) + 2) - std::log(static_cast<long double>(id) + 1)) /
        std::log(static_cast<long double>(vocab) + 1);
    const long double direct = 1.0L - std::pow(1.0L - p, static_cast<long double>(set.tries));
    // Stored as float: relative 1e-6 on the log is float rounding.
    EXPECT_NEAR(set.log_expected[j], static_cast<double>(std::log(direct)),
                1e-6 * std::max(1.0, std::fabs(static_cast<double>(std::log(direct)))));
    EXPECT_NEAR(log_expected_count(id, set.tries, vocab), static_cast<double>(std::log(direct)),
                1e-9);
  }
}

TEST(LogUniformSampler, IsTheSequenceOfDistinctRawDrawsOfTheSameStream) {
  const int64_t vocab = 5000, samples = 300;
  Rng rng(99, kRngSampler), replay(99, kRngSampler);
  const SampleSet set = sample_log_uniform_unique(vocab, samples, rng);
  std::vector<int32_t> ids;
  std::set<int64_t> seen;
  int64_t tries = 0;
  while (static_cast<int64_t>(ids.size()) < samples) {
    const int64_t id = log_uniform_draw(replay.uniform_double(), vocab);
    ++tries;
    if (seen.insert(id).second) ids.push_back(static_cast<int32_t>(id));
  }
  EXPECT_EQ(set.ids, ids);
  EXPECT_EQ(set.tries, tries);
  EXPECT_EQ(rng.state().position, replay.state().position);
}

TEST(LogUniformSampler, ReusedBuffersGiveTheSameResultAndLeaveScratchClean) {
  const int64_t vocab = 2000, samples = 100;
  Rng a(3, kRngSampler), b(3, kRngSampler);
  SampleSet reused;
  std::vector<uint8_t> seen;
  for (int step = 0; step < 3; ++step) {
    const SampleSet fresh = sample_log_uniform_unique(vocab, samples, a);
    sample_log_uniform_unique(vocab, samples, b, reused, seen);
    EXPECT_EQ(fresh.ids, reused.ids);
    EXPECT_EQ(fresh.tries, reused.tries);
    EXPECT_EQ(fresh.log_expected, reused.log_expected);
    for (const uint8_t s : seen) ASSERT_EQ(s, 0);
  }
}

TEST(LogUniformSampler, AllButOneIdCompletes) {
  Rng rng(5, kRngSampler);
  const SampleSet set = sample_log_uniform_unique(20, 19, rng);
  EXPECT_EQ(std::set<int32_t>(set.ids.begin(), set.ids.end()).size(), 19u);
}

TEST(LogUniformSampler, SamplesNotBelowVocabIsAnErrorNamingTheValues) {
  Rng rng(1, kRngSampler);
  try {
    sample_log_uniform_unique(100, 100, rng);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("samples = 100"), std::string::npos) << what;
    EXPECT_NE(what.find("vocab = 100"), std::string::npos) << what;
  }
  EXPECT_THROW(sample_log_uniform_unique(100, 250, rng), Error);
  EXPECT_THROW(sample_log_uniform_unique(100, 0, rng), Error);
}

}  // namespace
}  // namespace elmo
