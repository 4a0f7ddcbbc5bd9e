// TrainingRun: one `elmo_fast train` run, set-up to summary (app/train.cpp: set-up, the loop,
// logging and evaluation; app/train_checkpoints.cpp: checkpoints written and read back, and the
// starting points of a run: --resume, --init-from, the return after bad steps). Internal to
// app/: train_command (app/commands.h) is the entry point.
#pragma once

#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "app/commands.h"
#include "app/evaluate.h"
#include "app/init_from.h"
#include "app/progress.h"
#include "app/session.h"
#include "app/step_runner.h"
#include "app/validation_tracker.h"
#include "io/batcher.h"
#include "io/checkpoint.h"
#include "io/metrics.h"
#include "model/bilm.h"
#include "model/optimizer.h"
#include "runtime/rng.h"

namespace elmo {

using Clock = std::chrono::steady_clock;
inline double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// The sampler's position in state.json.
inline nlohmann::json rng_to_json(const RngState& s) {
  return {{"seed", s.seed}, {"stream", s.stream}, {"position", s.position}};
}
inline RngState rng_from_json(const nlohmann::json& j) {
  return {j.at("seed").get<uint64_t>(), j.at("stream").get<uint64_t>(),
          j.at("position").get<uint64_t>()};
}

class TrainingRun {
 public:
  TrainingRun(Config config, const TrainArgs& args, StepRunner& runner)
      : config_(std::move(config)), args_(args), runner_(runner) {}
  int run();

 private:
  // Set-up, in this order.
  void set_up_process();  // log level, device, CPU threads, GEMM precision
  void check_run_dir();   // a fresh run refuses a folder with checkpoints; --resume needs one
  void set_up_data();
  // The memory plan of this process (app/training_plan.h) against what the machine has: a
  // UsageError naming the largest items before the model is allocated (--skip-memory-check).
  void check_memory() const;
  void set_up_model();
  void resume_from(const std::string& where);
  // --init-from: the source read and its sizes checked before the model exists, then copied
  // into the freshly initialised model (app/init_from.h).
  std::optional<InitSource> read_init_source() const;
  void init_model_from(const InitSource& source);
  // The model, optimizer, carried state, data position and sampler of `ckpt` (resume, or a
  // return after bad steps).
  void restore(const CheckpointData& ckpt, const std::string& path);
  // What load_checkpoint reads of a checkpoint on this rank (io/checkpoint.h CheckpointPart).
  CheckpointPart checkpoint_part() const;
  void plan_steps();  // total_steps_, the metrics logger
  // The loop, and what it does after each step.
  void train();
  void count_step(const StepOutcome& outcome, double seconds);
  // A skipped step (StepOutcome::skipped): logs it; after train.max_bad_steps in a row goes back
  // to the last checkpoint (true) or stops with an error when it cannot.
  bool after_bad_step(const StepOutcome& outcome);
  void return_to_last_checkpoint();
  bool checkpoint_due_by_time() const;
  bool evaluation_due() const;
  void evaluate_during_training(bool saved_this_step);
  // checkpoint.keep_best and early stopping (app/validation_tracker.h): every process, with the
  // root's validation perplexity of this step.
  // during_training: a validation of the loop (may stop it); false for the final one.
  void track_validation(double perplexity, bool during_training);
  void check_validation_data() const;
  // Writes a checkpoint of this step; false when it could not be written and
  // checkpoint.on_write_error = "warn" let the run go on (else, and for the final one, an Error).
  bool save(bool final_save);
  void log_interval(bool force);
  EvalResult evaluate(const std::string& spec, const char* label);
  // The model holds only this rank's rows of its tables: evaluations are collective (every rank
  // evaluates, the root reports).
  // A softmax in the whole layout (softmax.type = "full": every row read at every step) is
  // evaluated by the root from a checkpoint instead.
  bool distributed_evaluation() {
    const RowLayout* softmax = model_->table_layout("softmax.weight");
    return !model_->holds_every_row() && softmax && softmax->is_sharded() && runner_.rank_sum();
  }
  // After the loop (root): evaluation and summary.json.
  void evaluate_and_summarise();

  Config config_;
  TrainArgs args_;
  StepRunner& runner_;
  bool stop_agreed_ = false;        // the run's processes stop after this step (StepOutcome)
  Device device_;                   // where the model trains (StepRunner::choose_device)
  std::string precision_ = "fp32";  // the GEMM precision in effect (effective_precision)
  DataFiles files_;
  Vocab vocab_;
  TokenCache train_data_;
  std::unique_ptr<Batcher> batcher_;
  std::unique_ptr<BiLM> model_;
  std::unique_ptr<Optimizer> optimizer_;
  std::unique_ptr<MetricsLogger> metrics_;
  LstmState states_[2];
  Progress progress_;

  int64_t step_ = 0, tokens_ = 0, total_steps_ = 0, first_step_ = 0;
  int64_t tokens_per_step_ = 0;
  // Log-interval accumulators.
  double interval_loss_ = 0.0, interval_nll_[2] = {0, 0};
  int64_t interval_steps_ = 0, interval_tokens_ = 0;
  Clock::time_point interval_start_;
  double last_grad_norm_ = 0.0, last_lr_ = 0.0, last_loss_ = 0.0;
  // Throughput over the whole run, excluding the first step (allocation warm-up).
  Clock::time_point timed_start_;
  int64_t timed_tokens_ = 0;
  std::vector<double> step_seconds_;
  Clock::time_point last_checkpoint_time_;
  Clock::time_point run_start_ = Clock::now();
  Clock::time_point train_start_, loop_end_;
  std::string last_checkpoint_;
  nlohmann::json init_report_;  // --init-from: what was copied (state.json, summary.json)
  int64_t last_checkpoint_step_ = -1;
  ValidationTracker validation_{config_};
  bool stopped_early_ = false;         // the patience ran out: the run ends normally
  int64_t last_validation_step_ = -1;  // the step of last_validation_
  EvalResult last_validation_;
  std::optional<EvalResult> final_valid_, final_test_;  // evaluated by all ranks together
  // Steps that were not finite (docs/FAULTS.md): skipped in all, in a row now, returns to a
  // checkpoint made for them; in state.json and summary.json.
  int64_t skipped_steps_ = 0, bad_in_a_row_ = 0, bad_step_reloads_ = 0;
};

}  // namespace elmo
