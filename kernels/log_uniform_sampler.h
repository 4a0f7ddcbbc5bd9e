// Log-uniform (Zipfian) candidate sampler for the sampled softmax, TF semantics.
//
//   P(k)    = (ln(k+2) - ln(k+1)) / ln(V+1)               k in [0, V)
//   draw(u) = floor(exp(u * ln(V+1))) - 1, clamped to [0, V-1]     u uniform in [0, 1)
//   unique sampling: draw until S distinct ids are seen; tries = number of draws made
//   expected count of id k = -expm1(tries * log1p(-P(k)))
//
// Ids are frequency ranks (vocab most frequent first), so the sampler favours frequent words.
// The log math is double precision; the per-sample log expected counts are stored as float
// because they enter float logits. The formulas are ELMO_HD so CUDA kernels can evaluate the
// expected count of a row's target on the device.
// What it is not: the softmax itself (model/sampled_softmax.h) or a device-side sampler (the
// draw is sequential and cheap; it runs on the host once per step).
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "runtime/hd.h"
#include "runtime/rng.h"

namespace elmo {

// Id drawn by one uniform u in [0, 1).
ELMO_HD int64_t log_uniform_draw(double u, int64_t vocab) {
  const double value = exp(u * log(static_cast<double>(vocab) + 1.0));
  int64_t id = static_cast<int64_t>(floor(value)) - 1;
  if (id < 0) id = 0;
  if (id > vocab - 1) id = vocab - 1;
  return id;
}

// P(k) of one draw.
ELMO_HD double log_uniform_prob(int64_t id, int64_t vocab) {
  return (log(static_cast<double>(id) + 2.0) - log(static_cast<double>(id) + 1.0)) /
         log(static_cast<double>(vocab) + 1.0);
}

// log(expected count of id in `tries` draws) = log(-expm1(tries * log1p(-P(id)))).
ELMO_HD double log_expected_count(int64_t id, int64_t tries, int64_t vocab) {
  return log(-expm1(static_cast<double>(tries) * log1p(-log_uniform_prob(id, vocab))));
}

// The samples of one training step.
struct SampleSet {
  std::vector<int32_t> ids;         // [S] distinct, in draw order
  int64_t tries = 0;                // draws made to get S distinct ids (>= S)
  std::vector<float> log_expected;  // [S] log_expected_count(ids[j], tries, vocab)
};

// Draws `samples` distinct ids from [0, vocab) with one rng.uniform_double() per draw.
// Requires 0 < samples < vocab <= INT32_MAX (elmo::Error otherwise, naming the values) and
// throws if the draws do not reach `samples` distinct ids within a bound far above the
// expected number (samples too close to vocab).
SampleSet sample_log_uniform_unique(int64_t vocab, int64_t samples, Rng& rng);

// Same, reusing the buffers of `out` and a scratch `seen` (resized to vocab, all zero on
// return), so a per-step caller allocates nothing in the steady state.
void sample_log_uniform_unique(int64_t vocab, int64_t samples, Rng& rng, SampleSet& out,
                               std::vector<uint8_t>& seen);

}  // namespace elmo
