// What state.json's "sampler_rng" holds after `steps` training steps of a run with run.seed =
// `seed`, replayed from the sampler itself: the stream Rng(seed, kRngSampler) after one draw of
// `samples` distinct ids of [0, vocab) per step, in the three keys elmo_fast has always written.
// Shared by test_train.cpp and test_train_dist.cpp.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <vector>

#include "kernels/log_uniform_sampler.h"
#include "runtime/rng.h"

namespace elmo::testing {

inline nlohmann::json sampler_position_after(uint64_t seed, int64_t vocab, int64_t samples,
                                             int steps) {
  Rng replay(seed, kRngSampler);
  SampleSet draw;
  std::vector<uint8_t> seen;
  for (int step = 0; step < steps; ++step)
    sample_log_uniform_unique(vocab, samples, replay, draw, seen);
  return {{"seed", replay.state().seed},
          {"stream", replay.state().stream},
          {"position", replay.state().position}};
}

}  // namespace elmo::testing
