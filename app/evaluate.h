// Perplexity of a model on a tokenised corpus with the full softmax (DESIGN.md §4 Evaluation):
// stream mode carries the state through the text, sentence mode starts every sentence from
// zero state. Used by `elmo_fast eval` and at the end of training.
#pragma once

#include <string>

#include "io/batcher.h"
#include "io/token_cache.h"
#include "io/vocab.h"
#include "model/bilm.h"
#include "nlohmann/json.hpp"

namespace elmo {

struct EvalResult {
  NllSum direction[2];
  int directions = 1;
  double perplexity(int d) const;  // exp(mean NLL) of one direction
  double mean_perplexity() const;  // exp(total NLL / total predictions), over directions
  nlohmann::json to_json() const;
};

struct EvalSettings {
  EvalMode mode = EvalMode::kStream;
  int64_t rows = 1;
  int64_t steps = 20;
  int64_t max_tokens = 0;  // 0 = all
  // The packing the model was trained with (data.packing): contiguous reads the text as the
  // TF PTB tutorial does (io/batcher.h).
  Packing packing = Packing::kSentences;
};

EvalResult evaluate_corpus(BiLM& model, const TokenCache& data, const Vocab& vocab,
                           const EvalSettings& settings);

// "fwd 61.2  bwd 60.8  mean 61.0 (83,000 tokens)"
std::string describe(const EvalResult& result);

}  // namespace elmo
