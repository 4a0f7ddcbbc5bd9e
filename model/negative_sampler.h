// The negative samples of the sampled softmax, step after step: one random stream (an Rng,
// stream kRngSampler) and one draw of S distinct log-uniform ids per training step
// (kernels/log_uniform_sampler.h), drawn ahead of time on request.
//
// take(k) hands over the samples train step k uses. plan(k) draws them earlier: steps are
// planned in order from the next step to take, and take(k) then returns exactly what plan(k)
// drew (a data-parallel rank fetches the softmax rows of step k + 1 while step k computes, so
// it plans step k + 1 before step k is taken). Planning changes when a step's samples are
// drawn, never which: the n-th step taken gets the stream's n-th draw either way.
//
// position() is the stream's state after the draws of the steps taken, planned draws not
// counted: what a checkpoint stores (state.json "sampler_rng"). restore() continues from such a
// position and drops any plan, so a resumed run redraws a planned step's samples identically.
//
// What it is not: the draw itself (kernels/log_uniform_sampler.h) or the softmax
// (model/sampled_softmax.h). BiLM owns one (BiLM::plan_step, BiLM::sampler_state).
#pragma once

#include <cstdint>
#include <deque>
#include <vector>

#include "kernels/log_uniform_sampler.h"
#include "runtime/rng.h"

namespace elmo {

class NegativeSampler {
 public:
  // S = `samples` distinct ids of [0, vocab) per step (checked when drawing: 0 < S < vocab),
  // from the stream at `start`.
  NegativeSampler(int64_t vocab, int64_t samples, const RngState& start);

  // Draws the samples of step `step` now. `step` must follow the last planned step (when none
  // is planned, it is taken to be the next step). Valid until that step is taken or restore().
  const SampleSet& plan(uint64_t step);
  // The samples of step `step`: its planned draw (the first planned step must be `step`), else
  // drawn now. Valid until the next call of plan, take or restore.
  const SampleSet& take(uint64_t step);

  // The stream after the draws of the steps taken (planned draws not counted).
  RngState position() const;
  // Continues from `position` (a position() of a sampler of the same vocab and S); drops plans.
  void restore(const RngState& position);

  size_t planned_steps() const { return planned_.size(); }

 private:
  struct Planned {
    uint64_t step = 0;
    RngState before;  // the stream before this draw
    SampleSet samples;
  };

  int64_t vocab_, samples_;
  Rng rng_;
  std::deque<Planned> planned_;  // consecutive steps, oldest first
  SampleSet taken_;
  std::vector<uint8_t> seen_;  // the draw's scratch [V], all zero between draws
};

}  // namespace elmo
