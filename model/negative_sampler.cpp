// The sampled softmax's negative samples, drawn ahead on request: see negative_sampler.h.
#include "model/negative_sampler.h"

#include <utility>

#include "runtime/error.h"

namespace elmo {

NegativeSampler::NegativeSampler(int64_t vocab, int64_t samples, const RngState& start)
    : vocab_(vocab), samples_(samples), rng_(start) {}

const SampleSet& NegativeSampler::plan(uint64_t step) {
  ELMO_CHECK(planned_.empty() || step == planned_.back().step + 1, "negative samples: step ", step,
             " planned after step ", planned_.empty() ? 0 : planned_.back().step,
             "; plan steps one after the other, in the order they train");
  Planned& next = planned_.emplace_back();
  next.step = step;
  next.before = rng_.state();
  sample_log_uniform_unique(vocab_, samples_, rng_, next.samples, seen_);
  return next.samples;
}

const SampleSet& NegativeSampler::take(uint64_t step) {
  if (planned_.empty()) {
    sample_log_uniform_unique(vocab_, samples_, rng_, taken_, seen_);
    return taken_;
  }
  ELMO_CHECK(planned_.front().step == step, "negative samples: step ", step, " trains, but ",
             "step ", planned_.front().step, " is the next one planned; train the steps in the ",
             "order they were planned");
  std::swap(taken_, planned_.front().samples);
  planned_.pop_front();
  return taken_;
}

RngState NegativeSampler::position() const {
  return planned_.empty() ? rng_.state() : planned_.front().before;
}

void NegativeSampler::restore(const RngState& position) {
  planned_.clear();
  rng_ = Rng(position);
}

}  // namespace elmo
