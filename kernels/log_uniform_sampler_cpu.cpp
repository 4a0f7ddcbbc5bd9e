// Host implementation of the unique log-uniform sampler (see kernels/log_uniform_sampler.h).
#include <algorithm>
#include <limits>

#include "kernels/log_uniform_sampler.h"
#include "runtime/error.h"

namespace elmo {

void sample_log_uniform_unique(int64_t vocab, int64_t samples, Rng& rng, SampleSet& out,
                               std::vector<uint8_t>& seen) {
  ELMO_CHECK(vocab > 0 && vocab <= std::numeric_limits<int32_t>::max(), "sampler vocab size ",
             vocab, " must be in [1, 2^31)");
  ELMO_CHECK(samples > 0 && samples < vocab, "sampled softmax needs 0 < samples < vocab, got ",
             "samples = ", samples, " and vocab = ", vocab,
             "; lower the number of samples (or use the full softmax)");
  // Draws needed grow like 1 / P(rarest still missing); this bound is far above any practical
  // expectation (S = 8192 of V = 793k takes ~2e4 draws) and only stops S ~ V from hanging.
  const int64_t max_tries = std::max<int64_t>(int64_t{1} << 24, 4096 * vocab);
  seen.resize(static_cast<size_t>(vocab), 0);
  out.ids.clear();
  out.ids.reserve(static_cast<size_t>(samples));
  int64_t tries = 0;
  while (static_cast<int64_t>(out.ids.size()) < samples) {
    if (tries >= max_tries) {
      for (const int32_t id : out.ids) seen[id] = 0;
      ELMO_CHECK(false, "log-uniform sampler drew ", tries, " times and found only ",
                 out.ids.size(), " of ", samples, " distinct ids out of vocab ", vocab,
                 "; use fewer samples");
    }
    const int64_t id = log_uniform_draw(rng.uniform_double(), vocab);
    ++tries;
    if (!seen[id]) {
      seen[id] = 1;
      out.ids.push_back(static_cast<int32_t>(id));
    }
  }
  for (const int32_t id : out.ids) seen[id] = 0;
  out.tries = tries;
  out.log_expected.resize(static_cast<size_t>(samples));
  for (int64_t j = 0; j < samples; ++j)
    out.log_expected[j] = static_cast<float>(log_expected_count(out.ids[j], tries, vocab));
}

SampleSet sample_log_uniform_unique(int64_t vocab, int64_t samples, Rng& rng) {
  SampleSet out;
  std::vector<uint8_t> seen;
  sample_log_uniform_unique(vocab, samples, rng, out, seen);
  return out;
}

}  // namespace elmo
