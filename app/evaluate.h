// Perplexity of a model on a tokenised corpus with the full softmax (DESIGN.md §4 Evaluation):
// stream mode carries the state through the text, sentence mode starts every sentence from
// zero state. Used by `elmo_fast eval` and at the end of training.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "app/eval_slices.h"
#include "io/batcher.h"
#include "io/config.h"
#include "io/tensorboard.h"
#include "io/token_cache.h"
#include "io/vocab.h"
#include "model/bilm.h"
#include "nlohmann/json.hpp"

namespace elmo {

struct EvalResult {
  NllSum direction[2];
  SliceSums slices[2];  // per direction, from the per-position NLLs that make up `direction`
  SliceBounds bounds;
  int directions = 1;
  double perplexity(int d) const;  // exp(mean NLL) of one direction
  double mean_perplexity() const;  // exp(total NLL / total predictions), over directions
  // Of one slice: direction d, or d = -1 for all directions together; NaN when it is empty.
  double slice_perplexity(int slice, int d = -1) const;
  double slice_share(int slice) const;  // the slice's share of all predictions (0 when none)
  // {"ppl_fwd", "ppl_bwd", "ppl", "tokens" (per direction), "slices": {"head": {"ids", "share",
  // "ppl", "ppl_fwd", "ppl_bwd", "tokens_fwd", "tokens_bwd"}, ...}}; empty slices' ppl null.
  nlohmann::json to_json() const;
};

struct EvalSettings {
  EvalMode mode = EvalMode::kStream;
  int64_t rows = 1;
  int64_t steps = 20;
  int64_t max_tokens = 0;               // 0 = all
  int64_t head_ids = 0, torso_ids = 0;  // slice bounds (eval.head_ids, eval.torso_ids)
  // The packing the model was trained with (data.packing, not an [eval] key): contiguous reads
  // the text as the TF PTB tutorial does (io/batcher.h).
  Packing packing = Packing::kSentences;
};
EvalSettings eval_settings(const EvalConfig& eval);  // everything from the [eval] keys

// Sees the NLL of every position of every batch, after the batch is evaluated: `batch` is the
// direction's batch as evaluated (targets of padded positions set to kIgnoreTarget) and
// nll[r * batch.steps + t] the NLL of row r, step t (NaN where the target is ignored).
// Called on the calling thread, batches in order, the forward direction first.
using PositionNllObserver =
    std::function<void(int direction, const Batch& batch, const std::vector<double>& nll)>;

// `ranks`: a model holding a rank's rows of its tables evaluates with the other ranks of its run
// (BiLM::evaluate; every rank calls this with the same data and settings, and all get the same
// result); the directions then run one after the other.
EvalResult evaluate_corpus(BiLM& model, const TokenCache& data, const Vocab& vocab,
                           const EvalSettings& settings, const PositionNllObserver& observer = {},
                           RankSum* ranks = nullptr);

// "fwd 61.2  bwd 60.8  mean 61.0 (83,000 tokens)"
std::string describe(const EvalResult& result);
// The slices as a small table, one line per slice plus a header and the total:
// "slice  ids  share  fwd  bwd  mean".
std::vector<std::string> slice_table(const EvalResult& result);
// Metrics of an evaluation during training: time, valid_ppl, valid_ppl_fwd, valid_ppl_bwd,
// valid_ppl_<slice> and valid_share_<slice> (slice names of app/eval_slices.h).
Scalars validation_scalars(const EvalResult& result, double time);

}  // namespace elmo
