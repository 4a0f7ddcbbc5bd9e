// StepRunner: how one process runs the steps of a training run, which app/train.cpp's loop
// drives without asking whether the run is distributed. Two implementations:
//
//   LocalStepRunner         the whole batch in this process: next batch, train_step, optimizer
//                           step
//   DataParallelStepRunner  one rank of a data-parallel job (app/data_parallel.h): its rows of
//                           every batch, the next step's batch and tail rows fetched one step
//                           ahead, gradients summed over the ranks before the update
//
// The loop asks the runner what differs: which device and how many CPU threads, how the set-up
// that writes shared files is ordered, which rows of every batch are this process's, how a step
// trains and updates (and the stop and time-based checkpoint flags every process agrees on),
// how a checkpoint is written, whether the model here holds every table row (evaluation reads
// the others from a checkpoint), and where the processes wait for each other.
//
// What it is not: the loop (step counting, metrics, the checkpoint and evaluation schedule, the
// summary: app/train.cpp), the model or the optimizer.
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "app/commands.h"
#include "io/batcher.h"
#include "io/checkpoint.h"
#include "io/config.h"
#include "model/bilm.h"
#include "model/optimizer.h"

namespace elmo {

class DataParallel;
class TokenCache;

// What one step reports: over the global batch, the same on every process of the run.
struct StepOutcome {
  double loss = 0.0;           // mean over directions of the mean NLL per row
  double nll[2] = {0.0, 0.0};  // per direction
  double grad_norm = 0.0;      // before clipping
  float lr = 0.0f;             // the learning rate applied
  // The processes agreed to stop after this step: one of them was asked to (SIGINT/SIGTERM). A
  // process alone has nobody to agree with: the loop watches its signal and this stays false.
  bool stop = false;
  bool checkpoint = false;  // a time-based checkpoint is due after this step (the root's clock)
  // The loss or the gradient norm was NaN or Inf (the same verdict on every process: both are
  // summed over the run's processes first): no parameter and no optimizer state changed, the
  // step's gradients were dropped, and rows of the carried state that were not finite were
  // reset to zero. The batch counts as used.
  bool skipped = false;
};

// What a runner trains: owned by the training run, given to attach() once they exist (after a
// resume has loaded them) and alive as long as the runner.
struct TrainingParts {
  const Config* config = nullptr;
  const TokenCache* train_data = nullptr;
  Batcher* batcher = nullptr;  // made with this runner's rank() and world_size()
  BiLM* model = nullptr;
  Optimizer* optimizer = nullptr;
  LstmState* states = nullptr;  // one per direction: the carried state of this process's rows
};

// Test hook (docs/FAULTS.md): the environment variable ELMO_INJECT_NAN_STEPS, a comma-separated
// list of steps as the logs count them (the N-th step of the run, N >= 1), makes the last process
// of the run poison each listed step once: "N" writes NaN into its first gradient value (so the
// global gradient norm is NaN), "loss:N" makes its loss NaN. A step trained again after a return
// to a checkpoint is not poisoned again. Read once per process; a malformed value is a
// UsageError naming the variable. Unset: nothing happens.
class NanInjection {
 public:
  static NanInjection& instance();                 // parsed from the environment on first use
  explicit NanInjection(const std::string& spec);  // the variable's text ("" = none)
  // Whether step `n` (1-based) should be poisoned this way; true once per step.
  bool gradient(int64_t n);
  bool loss(int64_t n);

 private:
  std::vector<int64_t> gradient_steps_, loss_steps_;
};
// Applies the hook to a step trained here (`last_process`: this process is the run's last).
void inject_nan(int64_t step, bool last_process, BiLM& model, TrainStepResult& result);

// Sets every row of `state` ([layers, rows, width] h and c) that holds a NaN or Inf in h or c of
// any layer to zero; returns how many rows (a skipped step's state may not be finite).
int64_t reset_nonfinite_rows(LstmState& state);

class StepRunner {
 public:
  virtual ~StepRunner() = default;

  // Where this process stands: the root writes logs, metrics, evaluations and the summary.
  virtual bool is_root() const = 0;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;

  // Set-up, in this order. The device this process trains on (train.device, --device,
  // --no_cuda; UsageError for what cannot run); the processes of the run on this machine
  // (train.threads = 0 splits its cores among them); `work` that writes files every process
  // reads (corpus, vocabulary, token cache), run by the root first, then by the others.
  virtual Device choose_device(const Config& config, const TrainArgs& args) = 0;
  virtual int processes_on_this_host() const = 0;
  virtual void root_first(const std::string& what, const std::function<void()>& work) = 0;
  // Which rows of the embedding and softmax tables this process stores (model/row_layout.h),
  // asked before the model is made (after the data): every row for a process alone; a rank's
  // hot head, own tail rows and step caches in a distributed run.
  virtual TableLayouts table_layouts(const Config& config, const TokenCache& train_data,
                                     int64_t vocab) = 0;
  virtual void attach(const TrainingParts& parts) = 0;

  // Steps: start() once, before step `first_step` of a run ending at `total_steps` (when it
  // has a step to run); then run_step(k) for k = first_step, first_step + 1, ...: trains the
  // step on this process's rows of the next batch and updates the parameters.
  // stop_requested: this process was asked to stop; checkpoint_due: its clock says a
  // time-based checkpoint is due (only the root's counts).
  virtual void start(int64_t first_step, int64_t total_steps) = 0;
  virtual StepOutcome run_step(int64_t step, bool stop_requested, bool checkpoint_due) = 0;
  // Going back to a checkpoint (train.max_bad_steps): every process calls abandon_ahead() after
  // the same step, which drops what it prepared for the steps after it (a data-parallel rank's
  // prefetched batch and rows); the loop then restores the model, optimizer, carried state, data
  // position and sampler from the checkpoint, calls restored() (a data-parallel rank waits until
  // every rank has restored before any reads its rows again) and start() at the checkpoint's
  // step.
  virtual void abandon_ahead() = 0;
  virtual void restored() = 0;
  // The batcher's position after the batch of the last step run (what a checkpoint stores).
  virtual BatcherState batcher_state() const = 0;

  // Writes `ckpt` (its step and state.json filled by the caller) with the model, optimizer and
  // carried state under run_dir/checkpoints; returns the step folder. Every process calls it.
  virtual std::string write_checkpoint(CheckpointData& ckpt, const std::string& run_dir,
                                       int keep_last) = 0;
  // Whether the model here is the whole model the root evaluates; if not, the root evaluates a
  // whole model loaded from a checkpoint of the current step.
  virtual bool whole_model() const = 0;
  // Sums over the run's processes for a distributed evaluation of a model that holds only this
  // process's rows of its tables (null for a process alone).
  virtual RankSum* rank_sum() { return nullptr; }
  // Every process of the run reaches `name`.
  virtual void barrier(const std::string& name) = 0;
  // The root's `value` on every process (the others' arguments are ignored): what the root
  // alone measured (a validation perplexity) becomes the same input to every process's
  // decisions. Every process calls it.
  virtual double share_from_root(double value) = 0;
  // The run ended cleanly here (after the final checkpoint).
  virtual void finish() = 0;
  // What summary.json adds about how the run was spread, beyond world_size (the hot rows).
  virtual void describe(nlohmann::json& summary) const = 0;
};

class LocalStepRunner : public StepRunner {
 public:
  bool is_root() const override { return true; }
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  Device choose_device(const Config& config, const TrainArgs& args) override;
  int processes_on_this_host() const override { return 1; }
  void root_first(const std::string& what, const std::function<void()>& work) override;
  TableLayouts table_layouts(const Config&, const TokenCache&, int64_t vocab) override {
    return TableLayouts::whole(vocab);
  }
  void attach(const TrainingParts& parts) override { parts_ = parts; }
  void start(int64_t, int64_t) override {}
  StepOutcome run_step(int64_t step, bool stop_requested, bool checkpoint_due) override;
  void abandon_ahead() override {}
  void restored() override {}
  BatcherState batcher_state() const override { return parts_.batcher->state(); }
  std::string write_checkpoint(CheckpointData& ckpt, const std::string& run_dir,
                               int keep_last) override;
  bool whole_model() const override { return true; }
  void barrier(const std::string&) override {}
  double share_from_root(double value) override { return value; }
  void finish() override {}
  void describe(nlohmann::json& summary) const override;

 private:
  TrainingParts parts_;
  Batch batch_[2];  // the current step's, per direction
};

class DataParallelStepRunner : public StepRunner {
 public:
  explicit DataParallelStepRunner(DataParallel& dist) : dist_(dist) {}
  bool is_root() const override;
  int rank() const override;
  int world_size() const override;
  Device choose_device(const Config& config, const TrainArgs& args) override;
  int processes_on_this_host() const override;
  void root_first(const std::string& what, const std::function<void()>& work) override;
  TableLayouts table_layouts(const Config& config, const TokenCache& train_data,
                             int64_t vocab) override;
  void attach(const TrainingParts& parts) override;
  void start(int64_t first_step, int64_t total_steps) override;
  StepOutcome run_step(int64_t step, bool stop_requested, bool checkpoint_due) override;
  void abandon_ahead() override;
  void restored() override;
  BatcherState batcher_state() const override { return state_after_; }
  std::string write_checkpoint(CheckpointData& ckpt, const std::string& run_dir,
                               int keep_last) override;
  bool whole_model() const override { return false; }
  RankSum* rank_sum() override;
  void barrier(const std::string& name) override;
  double share_from_root(double value) override;
  void finish() override;
  void describe(nlohmann::json& summary) const override;

 private:
  // A step's batch (this rank's rows) drawn one step ahead, with its sampling planned, so the
  // tail rows it needs travel while the step before computes.
  struct Pending {
    Batch batch[2];
    TokenBatch tokens[2];
    int64_t epoch = 0;
    BatcherState state_after;  // the batcher once this batch is drawn
  };
  // Draws step `step`'s batch into `p`, plans its samples and requests its tail rows.
  void prefetch(int64_t step, Pending& p);

  // dist.hot_rows, or the head covering dist.hot_coverage of the training tokens.
  int64_t hot_rows(const Config& config, const TokenCache& train_data, int64_t vocab);

  DataParallel& dist_;
  int64_t hot_rows_ = -1;  // once chosen
  std::vector<std::pair<int64_t, int64_t>> table_bytes_;  // every rank's (host, device), at attach
  std::vector<int64_t> peak_host_bytes_;                 // every rank's VmHWM, at finish
  TrainingParts parts_;
  int64_t total_steps_ = 0;
  int64_t prefetched_ = -1;        // the step whose batch and rows current_ holds (-1: none)
  int64_t checkpoint_writes_ = 0;  // write_checkpoint calls so far (the same on every rank)
  Pending current_, next_;
  BatcherState state_after_;
};

}  // namespace elmo
