// NegativeSampler: planned steps get exactly the draws of the stream they would have got
// unplanned, in order; position() leaves planned draws out and restore() continues from it;
// steps planned or taken out of order are errors naming the steps.
#include <gtest/gtest.h>

#include <tuple>
#include <vector>

#include "model/negative_sampler.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

constexpr int64_t kVocab = 500, kSamples = 20;
constexpr uint64_t kSeed = 77;

std::tuple<uint64_t, uint64_t, uint64_t> fields(const RngState& s) {
  return {s.seed, s.stream, s.position};
}

// The draws of a fresh stream, one per step, and the stream's state after each.
struct Replay {
  std::vector<SampleSet> draws;
  std::vector<RngState> after;
  explicit Replay(int steps) {
    Rng rng(kSeed, kRngSampler);
    for (int i = 0; i < steps; ++i) {
      draws.push_back(sample_log_uniform_unique(kVocab, kSamples, rng));
      after.push_back(rng.state());
    }
  }
};

void expect_same(const SampleSet& a, const SampleSet& b, const std::string& what) {
  EXPECT_EQ(a.ids, b.ids) << what;
  EXPECT_EQ(a.tries, b.tries) << what;
  EXPECT_EQ(a.log_expected, b.log_expected) << what;
}

TEST(NegativeSampler, PlannedOrNotEveryStepGetsTheStreamsNextDraw) {
  const Replay replay(6);
  NegativeSampler sampler(kVocab, kSamples, Rng(kSeed, kRngSampler).state());
  expect_same(sampler.take(10), replay.draws[0], "step 10, unplanned");
  // Two steps ahead, as a data-parallel rank plans step k + 1 before step k trains.
  const SampleSet planned_11 = sampler.plan(11);
  const SampleSet planned_12 = sampler.plan(12);
  EXPECT_EQ(sampler.planned_steps(), 2u);
  expect_same(planned_11, replay.draws[1], "step 11 planned");
  expect_same(planned_12, replay.draws[2], "step 12 planned");
  expect_same(sampler.take(11), replay.draws[1], "step 11 taken");
  expect_same(sampler.plan(13), replay.draws[3], "step 13 planned");
  expect_same(sampler.take(12), replay.draws[2], "step 12 taken");
  expect_same(sampler.take(13), replay.draws[3], "step 13 taken");
  EXPECT_EQ(sampler.planned_steps(), 0u);
  expect_same(sampler.take(14), replay.draws[4], "step 14, unplanned again");
}

TEST(NegativeSampler, PositionLeavesPlannedDrawsOutAndRestoreContinuesFromIt) {
  const Replay replay(4);
  NegativeSampler sampler(kVocab, kSamples, Rng(kSeed, kRngSampler).state());
  EXPECT_EQ(fields(sampler.position()), fields(Rng(kSeed, kRngSampler).state()));
  sampler.take(0);
  EXPECT_EQ(fields(sampler.position()), fields(replay.after[0]));
  sampler.plan(1);
  sampler.plan(2);
  EXPECT_EQ(fields(sampler.position()), fields(replay.after[0])) << "planned draws counted";
  sampler.take(1);
  EXPECT_EQ(fields(sampler.position()), fields(replay.after[1]));

  // A checkpoint taken now stores after[1]; the resumed sampler redraws step 2 identically,
  // whether it is a new sampler or this one restored (its plan of step 2 dropped).
  NegativeSampler resumed(kVocab, kSamples, sampler.position());
  expect_same(resumed.take(2), replay.draws[2], "resumed step 2");
  sampler.restore(replay.after[1]);
  EXPECT_EQ(sampler.planned_steps(), 0u);
  expect_same(sampler.plan(2), replay.draws[2], "restored, step 2 planned again");
  expect_same(sampler.take(2), replay.draws[2], "restored step 2");
  EXPECT_EQ(fields(sampler.position()), fields(replay.after[2]));
}

TEST(NegativeSampler, StepsOutOfOrderAreErrorsNamingThem) {
  NegativeSampler sampler(kVocab, kSamples, Rng(kSeed, kRngSampler).state());
  sampler.plan(3);
  EXPECT_NE(testing::error_of([&] { sampler.plan(5); }).find("step 5 planned after step 3"),
            std::string::npos);
  EXPECT_NE(testing::error_of([&] { sampler.take(4); }).find("step 3 is the next one planned"),
            std::string::npos);
  EXPECT_EQ(sampler.planned_steps(), 1u) << "a refused call changes nothing";
  sampler.take(3);
  // Draws themselves are checked by the sampler kernel: S must stay below the vocabulary.
  NegativeSampler too_many(10, 10, Rng(kSeed, kRngSampler).state());
  EXPECT_NE(testing::error_of([&] { too_many.take(0); }).find("10"), std::string::npos);
}

}  // namespace
}  // namespace elmo
