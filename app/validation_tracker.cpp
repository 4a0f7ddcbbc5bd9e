#include "app/validation_tracker.h"

#include <cmath>
#include <cstdio>

#include "runtime/error.h"

namespace elmo {

ValidationTracker::ValidationTracker(const Config& config)
    : keep_best_(config.checkpoint.keep_best),
      patience_(config.train.early_stopping_patience),
      min_delta_(config.train.early_stopping_min_delta) {}

ValidationVerdict ValidationTracker::observe(int64_t step, double perplexity) {
  ValidationVerdict v;
  ++validations_;
  v.new_best = perplexity < best_ppl_;  // false for NaN
  v.improvement = perplexity < best_ppl_ - min_delta_;
  if (v.new_best) {
    best_ppl_ = perplexity;
    best_step_ = step;
  }
  since_improvement_ = v.improvement ? 0 : since_improvement_ + 1;
  v.stop = exhausted();
  return v;
}

nlohmann::json ValidationTracker::to_json() const {
  nlohmann::json j;
  j["best_ppl"] = std::isfinite(best_ppl_) ? nlohmann::json(best_ppl_) : nlohmann::json(nullptr);
  j["best_step"] = best_step_;
  j["validations"] = validations_;
  j["since_improvement"] = since_improvement_;
  return j;
}

void ValidationTracker::restore(const nlohmann::json& state) {
  const auto fail = [&](const char* field) {
    return Error(str("checkpoint state.json \"validation\".\"", field, "\" is missing or not ",
                     "a number: the checkpoint is damaged"));
  };
  if (!state.is_object()) throw fail("(object)");
  const auto number = [&](const char* field) -> const nlohmann::json& {
    if (!state.contains(field) || !state[field].is_number()) throw fail(field);
    return state[field];
  };
  if (!state.contains("best_ppl")) throw fail("best_ppl");
  best_ppl_ = state["best_ppl"].is_null() ? std::numeric_limits<double>::infinity()
                                          : number("best_ppl").get<double>();
  best_step_ = number("best_step").get<int64_t>();
  validations_ = number("validations").get<int64_t>();
  since_improvement_ = number("since_improvement").get<int64_t>();
}

std::string ValidationTracker::stop_reason() const {
  char line[200];
  std::snprintf(line, sizeof line,
                "validation perplexity has not improved by more than %g for %lld validation%s "
                "(best %.4f at step %lld)",
                min_delta_, static_cast<long long>(since_improvement_),
                since_improvement_ == 1 ? "" : "s", best_ppl_, static_cast<long long>(best_step_));
  return line;
}

}  // namespace elmo
