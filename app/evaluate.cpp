#include "app/evaluate.h"

#include <cmath>
#include <cstdio>

#include "kernels/full_softmax.h"
#include "runtime/parallel.h"

namespace elmo {

double EvalResult::perplexity(int d) const {
  return direction[d].count ? std::exp(direction[d].nll / direction[d].count) : 0.0;
}

double EvalResult::mean_perplexity() const {
  double nll = 0.0;
  int64_t count = 0;
  for (int d = 0; d < directions; ++d) {
    nll += direction[d].nll;
    count += direction[d].count;
  }
  return count ? std::exp(nll / count) : 0.0;
}

nlohmann::json EvalResult::to_json() const {
  nlohmann::json j;
  j["ppl_fwd"] = perplexity(0);
  if (directions == 2) j["ppl_bwd"] = perplexity(1);
  j["ppl"] = mean_perplexity();
  j["tokens"] = direction[0].count;
  return j;
}

std::string describe(const EvalResult& result) {
  char line[160];
  if (result.directions == 2)
    std::snprintf(line, sizeof line, "fwd %.2f  bwd %.2f  mean %.2f (%lld tokens per direction)",
                  result.perplexity(0), result.perplexity(1), result.mean_perplexity(),
                  static_cast<long long>(result.direction[0].count));
  else
    std::snprintf(line, sizeof line, "fwd %.2f (%lld tokens)", result.perplexity(0),
                  static_cast<long long>(result.direction[0].count));
  return line;
}

EvalResult evaluate_corpus(BiLM& model, const TokenCache& data, const Vocab& vocab,
                           const EvalSettings& settings) {
  EvalOptions options;
  options.mode = settings.mode;
  options.rows = settings.rows;
  options.steps = settings.steps;
  options.packing = settings.packing;
  EvalBatcher batcher(data, vocab, options);
  EvalResult result;
  result.directions = model.shape().directions();
  LstmState state[2];
  Batch batch[2];
  int64_t rows = -1;
  while (batcher.next(&batch[0], &batch[1])) {
    if (batch[0].rows != rows || settings.mode == EvalMode::kSentence) {
      rows = batch[0].rows;
      for (int d = 0; d < result.directions; ++d) state[d] = model.zero_state(rows);
    }
    // The directions are independent: one thread each.
    NllSum sums[2];
    run_concurrently(result.directions, [&](int d) {
      Batch& b = batch[d];
      if (!b.mask.empty())
        for (size_t i = 0; i < b.mask.size(); ++i)
          if (!b.mask[i]) b.targets[i] = kIgnoreTarget;
      TokenBatch tokens{b.rows, b.steps, b.inputs.data(), b.targets.data()};
      sums[d] = model.evaluate(d, tokens, state[d]);
    });
    for (int d = 0; d < result.directions; ++d) {
      result.direction[d].nll += sums[d].nll;
      result.direction[d].count += sums[d].count;
    }
    if (settings.max_tokens > 0 && result.direction[0].count >= settings.max_tokens) break;
  }
  return result;
}

}  // namespace elmo
