// What a run remembers of its validations, for checkpoint.keep_best and early stopping
// (train.early_stopping_patience, train.early_stopping_min_delta).
//
// Every validation perplexity (mean over directions, full softmax) is observed in order:
//   - it is the new best when it is lower than the best so far (strictly; the first one always
//     is): keep_best then installs this step's checkpoint as checkpoints/best;
//   - it counts as an improvement when it is lower than the best so far by more than min_delta;
//     otherwise the count of validations since the last improvement grows by one;
//   - with patience P > 0 the run stops once that count reaches P (P = 0: never).
// So with min_delta 0 every new best is an improvement; with min_delta > 0 a slow creep still
// updates the best model while it counts towards the patience.
// The state (best perplexity and step, validations, validations since the last improvement) is
// stored in every checkpoint's state.json under "validation" and restored by --resume, so a
// resumed run decides exactly as the uninterrupted one would. Distributed runs feed every rank
// the root's perplexity (StepRunner::share_from_root), so every rank decides the same.
//
// What it is not: the evaluation (app/evaluate.h) or the checkpoint copy (io/checkpoint.h).
#pragma once

#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>

#include "io/config.h"

namespace elmo {

struct ValidationVerdict {
  bool new_best = false;     // lower than every earlier validation
  bool improvement = false;  // lower than the best before it by more than min_delta
  bool stop = false;         // the patience ran out with this validation
};

class ValidationTracker {
 public:
  explicit ValidationTracker(const Config& config);

  // Whether the run needs validations tracked (keep_best or a patience).
  bool active() const { return keep_best_ || patience_ > 0; }
  bool keep_best() const { return keep_best_; }

  ValidationVerdict observe(int64_t step, double perplexity);

  double best_perplexity() const { return best_ppl_; }  // +inf before the first validation
  int64_t best_step() const { return best_step_; }      // -1 before the first validation
  int64_t since_improvement() const { return since_improvement_; }
  int64_t validations() const { return validations_; }
  // Whether the patience has run out (the next validation that is no improvement stops too).
  bool exhausted() const { return patience_ > 0 && since_improvement_ >= patience_; }

  // state.json "validation" (the best perplexity is null before the first validation).
  nlohmann::json to_json() const;
  // From state.json; Error naming the field when it is malformed.
  void restore(const nlohmann::json& state);

  // "validation perplexity has not improved by more than 0.5 for 3 validations (best 81.2 at
  // step 400)"
  std::string stop_reason() const;

 private:
  bool keep_best_ = false;
  int64_t patience_ = 0;
  double min_delta_ = 0.0;
  double best_ppl_ = std::numeric_limits<double>::infinity();
  int64_t best_step_ = -1;
  int64_t since_improvement_ = 0;
  int64_t validations_ = 0;
};

}  // namespace elmo
