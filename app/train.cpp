// `elmo_fast train`: the training loop. Data set-up, model, optimizer, batches, metrics,
// validation and the final evaluation (checkpoints and the run's starting points:
// app/train_checkpoints.cpp; the TrainingRun class: app/training_run.h).
// One loop for every run: what differs between a process alone and a rank of a data-parallel
// job is the StepRunner's (app/step_runner.h).
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <map>
#include <optional>
#include <thread>

#include "app/commands.h"
#include "app/data_parallel.h"
#include "app/evaluate.h"
#include "app/init_from.h"
#include "app/progress.h"
#include "app/report.h"
#include "app/session.h"
#include "app/step_runner.h"
#include "app/training_plan.h"
#include "app/training_run.h"
#include "app/validation_tracker.h"
#include "io/atomic_file.h"
#include "io/batcher.h"
#include "io/metrics.h"
#include "model/optimizer.h"
#include "runtime/cuda_memory.h"
#include "runtime/host_memory.h"
#include "runtime/log.h"
#include "runtime/parallel.h"

namespace elmo {

namespace {

volatile std::sig_atomic_t g_stop_signal = 0;
void on_stop_signal(int signal) { g_stop_signal = signal; }

// While it lives, SIGINT and SIGTERM set g_stop_signal (the loop stops after the current step
// and the run saves a final checkpoint); the previous handlers come back afterwards.
class StopSignals {
 public:
  StopSignals() {
    g_stop_signal = 0;
    int_ = std::signal(SIGINT, on_stop_signal);
    term_ = std::signal(SIGTERM, on_stop_signal);
  }
  ~StopSignals() {
    std::signal(SIGINT, int_);
    std::signal(SIGTERM, term_);
  }
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

 private:
  void (*int_)(int) = nullptr;
  void (*term_)(int) = nullptr;
};

// A CPU-only build (runtime/cuda_memory.h cuda_compiled_in) refuses every request for a GPU before
// any work, naming the fix: a CUDA device (train.device or --device "cuda" / "cuda:N") or a GPU
// GEMM precision (train.precision "tf32" / "bf16"). Requests that contradict --no_cuda or an
// explicit CPU device keep the messages that name that contradiction (the checks below).
void check_build_supports(const Config& config, const TrainArgs& args) {
  if (cuda_compiled_in() || args.no_cuda) return;
  const std::string wanted = args.device.empty() ? config.train.device : args.device;
  if (wanted.rfind("cuda", 0) == 0)
    throw UsageError(
        str(args.device.empty() ? str("train.device = \"", wanted, "\"") : str("--device ", wanted),
            " asks for a GPU, but no GPU is visible: ", kCpuOnlyBuildMessage));
  if (config.train.precision != "fp32" && wanted != "cpu")
    throw UsageError(str("train.precision = \"", config.train.precision, "\" selects a GPU GEMM ",
                         "mode, but ", kCpuOnlyBuildMessage));
}

// train.precision selects the CUDA GEMM mode (runtime/gemm.h); the CPU always computes fp32.
// Asking for tf32/bf16 and for the CPU at the same time (train.device = "cpu", --device cpu,
// --no_cuda) is a contradiction: a usage error before any work, so a CPU run never silently
// measures something other than what was asked. "auto" that finds no GPU is not a request for
// the CPU: that run trains in fp32 with a warning (effective_precision), so one config serves
// GPU machines and CPU-only ones.
void check_precision_request(const Config& config, const TrainArgs& args) {
  check_build_supports(config, args);
  const std::string& precision = config.train.precision;
  if (precision == "fp32") return;
  const std::string wanted = args.device.empty() ? config.train.device : args.device;
  std::string cpu_request;
  if (args.no_cuda)
    cpu_request = "--no_cuda";
  else if (wanted == "cpu")
    cpu_request = args.device.empty() ? "train.device = \"cpu\"" : "--device cpu";
  if (cpu_request.empty()) return;
  throw UsageError(str("train.precision = \"", precision, "\" selects the GPU's GEMM mode, but ",
                       cpu_request, " trains on the CPU, which computes fp32 only: set ",
                       "train.precision = \"fp32\" (--set train.precision=fp32) for a CPU run, "
                       "or train on a GPU (train.device = \"auto\" or \"cuda\")"));
}

// The precision the GEMMs of this run use: train.precision on a GPU, fp32 on the CPU (with a
// warning when the config asked for less: "auto" found no GPU).
std::string effective_precision(const Config& config, const Device& device) {
  if (device.is_cuda() || config.train.precision == "fp32") return config.train.precision;
  log_warn("train.precision = \"", config.train.precision, "\" applies to GPU GEMMs; this run ",
           "trains on the CPU (train.device = \"auto\" found no GPU to use), which computes ",
           "fp32");
  return "fp32";
}

}  // namespace

int TrainingRun::run() {
  set_up_process();
  check_run_dir();
  set_up_data();
  check_validation_data();
  if (!args_.skip_memory_check) check_memory();
  const std::optional<InitSource> init = read_init_source();
  set_up_model();
  if (!args_.resume.empty()) resume_from(args_.resume);
  if (init) init_model_from(*init);
  runner_.attach({&config_, &train_data_, batcher_.get(), model_.get(), optimizer_.get(), states_});
  plan_steps();

  const StopSignals signals;
  train();
  if (runner_.is_root()) log_interval(true);
  save(true);
  // A model holding only this rank's rows evaluates with the other ranks, before they leave.
  if (distributed_evaluation() && !stop_agreed_) {
    if (!files_.valid.empty() && last_validation_step_ != step_)
      final_valid_ = evaluate(files_.valid, "validation");
    if (!files_.test.empty()) final_test_ = evaluate(files_.test, "test");
  }
  runner_.finish();  // clean goodbye: rank 0 may evaluate long after the others left
  if (g_stop_signal != 0 || stop_agreed_) {
    const int signal = g_stop_signal != 0 ? static_cast<int>(g_stop_signal) : SIGTERM;
    if (runner_.is_root())
      log_warn("stopped by signal ", signal, " at step ", step_, "; continue with --resume");
    return 128 + signal;
  }
  if (!runner_.is_root()) return 0;  // the root evaluates and writes the summary
  evaluate_and_summarise();
  return 0;
}

void TrainingRun::set_up_process() {
  if (!runner_.is_root() && log_level() < LogLevel::kWarn) set_log_level(LogLevel::kWarn);
  check_precision_request(config_, args_);
  NanInjection::instance();  // a malformed ELMO_INJECT_NAN_STEPS is refused before any work
  device_ = runner_.choose_device(config_, args_);
  int threads = static_cast<int>(config_.train.threads);
  if (threads == 0)  // all cores, shared by the run's processes on this machine
    threads = std::max(1, static_cast<int>(std::thread::hardware_concurrency()) /
                              std::max(1, runner_.processes_on_this_host()));
  set_num_threads(threads);
  precision_ = effective_precision(config_, device_);
  log_info("device: ", device_.str(),
           device_.is_cuda() ? str(" (", cuda_device_name(device_.index), ")") : "",
           ", GEMM precision ", precision_, ", ", num_threads(), " CPU thread(s)",
           cuda_device_count() > 0 ? str(" (", cuda_device_count(), " GPU(s) visible)") : "");
}

void TrainingRun::check_run_dir() {
  const std::optional<std::string> existing = find_latest_checkpoint(config_.run.dir);
  if (args_.resume.empty() && existing)
    throw UsageError(str("run.dir '", config_.run.dir, "' already holds checkpoints (latest ",
                         *existing, "): pass --resume to continue it, or set another run.dir ",
                         "(e.g. --set run.dir=runs/new)"));
  if (!args_.resume.empty() && args_.resume == "latest" && !existing)
    throw UsageError(str("--resume: no checkpoint in run.dir '", config_.run.dir, "'"));
}

void TrainingRun::set_up_data() {
  // The root writes the shared files (builtin corpus, vocabulary, token cache) first; the other
  // processes then find them in place.
  runner_.root_first("data", [&] {
    files_ = resolve_data_files(config_);
    vocab_ = prepare_vocab(config_, files_,
                           /*rebuild=*/args_.resume.empty() && runner_.is_root());
    train_data_ = TokenCache::open_or_build(files_.train, vocab_, cache_dir(config_));
  });
  const TokenStats stats = train_data_.stats();
  log_info("training corpus: ", stats.sentences, " sentences, ", stats.tokens, " tokens, ",
           train_data_.num_shards(), " file(s), ", str(100.0 * stats.unknown_rate()).substr(0, 5),
           "% unknown");
  BatcherOptions options;
  options.rows = config_.train.batch_size;
  options.steps = config_.train.unroll_steps;
  options.shuffle = config_.data.shuffle;
  options.seed = static_cast<uint64_t>(config_.run.seed);
  options.rank = runner_.rank();
  options.world_size = runner_.world_size();
  options.packing = packing_from_name(config_.data.packing);
  ELMO_REQUIRE(config_.train.batch_size >= options.world_size,
               "train.batch_size = ", config_.train.batch_size, " is smaller than the ",
               options.world_size, " ranks of this run: every rank needs at least one row");
  batcher_ = std::make_unique<Batcher>(train_data_, vocab_, options);
  slice_bounds(vocab_, config_.eval.head_ids, config_.eval.torso_ids);  // bad bounds: refuse now
}

void TrainingRun::check_memory() const {
  PlanInputs in;
  in.config = &config_;
  in.vocab = vocab_.size();
  in.world_size = runner_.world_size();
  // A rank stores its hot head, its tail rows and step caches (the runner's layouts).
  in.hot_rows = runner_.world_size() > 1
                    ? runner_.table_layouts(config_, train_data_, vocab_.size()).embedding.hot
                    : 0;
  in.on_gpu = device_.is_cuda();
  in.validation = !files_.valid.empty() || !files_.test.empty();
  const TrainingPlan plan = plan_training(in);
  int64_t device_free = -1;
  if (device_.is_cuda()) {
    size_t free_bytes = 0, total_bytes = 0;
    cuda_memory_info(device_.index, &free_bytes, &total_bytes);
    device_free = static_cast<int64_t>(free_bytes);
  }
  check_memory_fits(plan, runner_.processes_on_this_host(), host_memory_available(), device_free,
                    device_.str());
}

void TrainingRun::set_up_model() {
  // The model's negative sampler starts at Rng(run.seed, kRngSampler) (BiLM::sampler_state).
  model_ =
      std::make_unique<BiLM>(bilm_shape(config_, vocab_.size()), bilm_options(config_), device_,
                             runner_.table_layouts(config_, train_data_, vocab_.size()));
  model_->init(static_cast<uint64_t>(config_.run.seed), bilm_init(config_));
  optimizer_ = std::make_unique<Optimizer>(model_->params(), optimizer_options(config_));
  const RowSplit mine = batcher_->my_rows();  // all rows, or a rank's share
  for (int d = 0; d < model_->shape().directions(); ++d)
    states_[d] = model_->zero_state(mine.end - mine.begin);
  log_info("model: ", model_->params().numel(), " parameters (vocab ", vocab_.size(),
           ", embedding ", model_->shape().embedding_dim, ", cell ", model_->shape().cell_size,
           ", projection ", model_->shape().proj_dim, ", ", model_->shape().layers, " layers, ",
           model_->shape().directions() == 2 ? "bidirectional" : "forward only", ")");
}

void TrainingRun::plan_steps() {
  tokens_per_step_ = config_.train.batch_size * config_.train.unroll_steps;
  total_steps_ =
      config_.train.max_steps > 0
          ? config_.train.max_steps
          : static_cast<int64_t>(std::ceil(config_.train.epochs * batcher_->epoch_positions() /
                                           static_cast<double>(tokens_per_step_)));
  total_steps_ = std::max<int64_t>(total_steps_, 1);
  if (runner_.is_root())
    metrics_ = std::make_unique<MetricsLogger>(config_.run.dir, config_.metrics.jsonl,
                                               config_.metrics.tensorboard);
  log_info("training ", total_steps_ - step_, " steps of ", config_.train.batch_size, " x ",
           config_.train.unroll_steps, " tokens (", config_.softmax.type, " softmax",
           config_.softmax.type == "sampled" ? str(", ", config_.softmax.samples, " samples") : "",
           ") into ", config_.run.dir);
}

// Until the last step, a stop signal to this process, or a stop agreed with the others: one
// step, its bookkeeping, then a checkpoint and a validation when due.
void TrainingRun::train() {
  interval_start_ = last_checkpoint_time_ = Clock::now();
  train_start_ = Clock::now();
  first_step_ = step_;
  runner_.start(step_, total_steps_);
  while (step_ < total_steps_ && g_stop_signal == 0 && !stop_agreed_ && !stopped_early_) {
    const auto step_start = Clock::now();
    const StepOutcome outcome =
        runner_.run_step(step_, g_stop_signal != 0, checkpoint_due_by_time());
    stop_agreed_ = outcome.stop;
    count_step(outcome, seconds_since(step_start));
    if (outcome.skipped && after_bad_step(outcome)) continue;  // back at the last checkpoint
    if (runner_.is_root()) log_interval(step_ == total_steps_);
    const bool by_steps =
        config_.checkpoint.every_steps > 0 && step_ % config_.checkpoint.every_steps == 0;
    bool saved = false;
    if ((by_steps || outcome.checkpoint) && step_ < total_steps_ && !stop_agreed_)
      saved = save(false);
    if (evaluation_due()) evaluate_during_training(saved);
  }
  loop_end_ = Clock::now();
}

void TrainingRun::count_step(const StepOutcome& outcome, double seconds) {
  ++step_;
  tokens_ += tokens_per_step_;
  step_seconds_.push_back(seconds);
  interval_tokens_ += tokens_per_step_;
  if (outcome.skipped) {  // its loss and norm are not numbers to average
    ++skipped_steps_;
    ++bad_in_a_row_;
  } else {
    bad_in_a_row_ = 0;
    last_grad_norm_ = outcome.grad_norm;
    last_lr_ = outcome.lr;
    interval_loss_ += outcome.loss;
    interval_nll_[0] += outcome.nll[0];
    interval_nll_[1] += outcome.nll[1];
    ++interval_steps_;
  }
  if (step_ == first_step_ + 1) {
    timed_start_ = Clock::now();
  } else {
    timed_tokens_ += tokens_per_step_;
  }
}

// Every process sees the same outcome (the loss and norm are summed over them), so every
// process reaches the same verdict here.
bool TrainingRun::after_bad_step(const StepOutcome& outcome) {
  const int64_t allowed = config_.train.max_bad_steps;
  log_warn("step ", step_, " skipped: loss ", outcome.loss, ", gradient norm ", outcome.grad_norm,
           " (not finite); parameters and optimizer state unchanged (", bad_in_a_row_, " of ",
           allowed, " in a row allowed by train.max_bad_steps)");
  if (bad_in_a_row_ < allowed) return false;
  const std::string streak = str("steps ", step_ - bad_in_a_row_ + 1, " to ", step_,
                                 " all had a NaN or Inf loss or gradient norm");
  const std::string advice =
      "; lower optimizer.learning_rate, set optimizer.clip_norm, or check the data";
  if (last_checkpoint_.empty())
    throw Error(str("training diverged: ", streak, " and there is no checkpoint to go back to",
                    advice, " (checkpoint.every_steps saves earlier)"));
  if (bad_step_reloads_ >= config_.train.max_bad_step_reloads)
    throw Error(str("training diverged: ", streak, " after ", bad_step_reloads_,
                    " return(s) to a checkpoint (train.max_bad_step_reloads = ",
                    config_.train.max_bad_step_reloads, ")", advice,
                    ", then continue with --resume"));
  return_to_last_checkpoint();
  return true;
}

// This process's clock (the runner makes the root's decide for every process).
bool TrainingRun::checkpoint_due_by_time() const {
  return config_.checkpoint.every_minutes > 0 &&
         seconds_since(last_checkpoint_time_) >= 60.0 * config_.checkpoint.every_minutes;
}

bool TrainingRun::evaluation_due() const {
  return config_.train.eval_every > 0 && step_ % config_.train.eval_every == 0 &&
         !files_.valid.empty() && step_ < total_steps_ && !stop_agreed_;
}

// The root evaluates; a model holding only some table rows (a data-parallel rank) gets the
// others from a checkpoint of this step first. The other processes wait.
void TrainingRun::evaluate_during_training(bool saved_this_step) {
  if (distributed_evaluation()) {  // every rank evaluates and gets the same result
    const EvalResult r = evaluate(files_.valid, "validation");
    if (runner_.is_root()) metrics_->log(step_, validation_scalars(r, seconds_since(run_start_)));
    last_validation_ = r;
    last_validation_step_ = step_;
    if (validation_.active()) track_validation(r.mean_perplexity(), true);
    return;
  }
  if (!runner_.whole_model() && !saved_this_step && !save(false)) {
    if (runner_.is_root())  // every process saw the same failure
      log_warn("validation at step ", step_, " skipped: it needs the checkpoint of this step");
    return;
  }
  double perplexity = 0.0;
  if (runner_.is_root()) {
    const EvalResult r = evaluate(files_.valid, "validation");
    metrics_->log(step_, validation_scalars(r, seconds_since(run_start_)));
    perplexity = r.mean_perplexity();
    last_validation_ = r;
    last_validation_step_ = step_;
  }
  runner_.barrier(str("eval-", step_));
  if (validation_.active()) track_validation(runner_.share_from_root(perplexity), true);
}

// A new best is installed as checkpoints/best from this step's checkpoint (written now when
// there is none yet: collective, and every process takes the same decision from the same
// perplexity); the step's checkpoint records the tracker after this validation, so --resume
// continues with it.
void TrainingRun::track_validation(double perplexity, bool during_training) {
  const ValidationVerdict verdict = validation_.observe(step_, perplexity);
  const bool install = verdict.new_best && validation_.keep_best();
  // checkpoint.on_write_error = "warn": a checkpoint of this step that could not be written
  // leaves checkpoints/best at the earlier best (every process saw the same failure).
  const bool have_step = last_checkpoint_step_ == step_ || (install && save(false));
  if (runner_.is_root()) {
    if (have_step)
      update_checkpoint_state(last_checkpoint_, {{"validation", validation_.to_json()}});
    if (install && !have_step)
      log_warn("best validation perplexity so far (", str(perplexity).substr(0, 8), ") at step ",
               step_, ", but its checkpoint could not be written: ", config_.run.dir,
               "/checkpoints/best keeps the earlier best");
    if (install && have_step) {
      const std::string best =
          install_checkpoint_copy(last_checkpoint_, "best",
                                  {{"validation", validation_.to_json()},
                                   {"best", {{"step", step_}, {"valid_ppl", perplexity}}}});
      log_info("best validation perplexity so far (", str(perplexity).substr(0, 8), "): ", best,
               " now holds step ", step_);
    }
  }
  if (verdict.stop && during_training) {
    stopped_early_ = true;
    if (runner_.is_root())
      log_info("early stopping at step ", step_, ": ", validation_.stop_reason());
  }
}

// Validations during training need held-out text: keep_best and early stopping without it are
// a usage error (the config check already asked for train.eval_every > 0).
void TrainingRun::check_validation_data() const {
  if (!validation_.active() || !files_.valid.empty()) return;
  throw UsageError(str(config_.checkpoint.keep_best ? "checkpoint.keep_best = true"
                                                    : "train.early_stopping_patience > 0",
                       " needs validation data, but data.valid is empty: set data.valid to a ",
                       "held-out text file (or, with builtin:synthetic, synthetic.valid_sentences "
                       "> 0)"));
}

void TrainingRun::log_interval(bool force) {
  if (interval_steps_ == 0) return;
  const bool due = force || step_ % config_.train.log_every == 0;
  const double elapsed = std::max(1e-9, seconds_since(interval_start_));
  const double loss = interval_loss_ / interval_steps_;
  const double overall_rate =
      timed_tokens_ > 0 ? timed_tokens_ / std::max(1e-9, seconds_since(timed_start_)) : 0.0;
  const double rate = interval_tokens_ / elapsed;
  ProgressSnapshot snap;
  snap.step = step_;
  snap.total_steps = total_steps_;
  snap.tokens_per_s = overall_rate > 0 ? overall_rate : rate;
  snap.loss = loss;
  snap.perplexity = std::exp(loss);
  snap.lr = last_lr_;
  snap.epoch = batcher_->epochs_done();
  snap.eta_seconds = snap.tokens_per_s > 0
                         ? (total_steps_ - step_) * static_cast<double>(config_.train.batch_size *
                                                                         config_.train.unroll_steps) /
                               snap.tokens_per_s
                         : -1.0;
  progress_.update(snap, due);
  if (!due) return;
  Scalars scalars{{"time", seconds_since(run_start_)},
                  {"tokens", static_cast<double>(tokens_)},
                  {"loss", loss},
                  {"ppl", std::exp(loss)},
                  {"tokens_per_s", rate},
                  {"lr", last_lr_},
                  {"grad_norm", last_grad_norm_},
                  {"epoch", batcher_->epochs_done()}};
  if (model_->shape().directions() == 2) {
    scalars.push_back({"ppl_fwd", std::exp(interval_nll_[0] / interval_steps_)});
    scalars.push_back({"ppl_bwd", std::exp(interval_nll_[1] / interval_steps_)});
  }
  if (skipped_steps_ > 0) scalars.push_back({"skipped_steps", static_cast<double>(skipped_steps_)});
  metrics_->log(step_, scalars);
  last_loss_ = loss;
  interval_loss_ = interval_nll_[0] = interval_nll_[1] = 0.0;
  interval_steps_ = interval_tokens_ = 0;
  interval_start_ = Clock::now();
}

EvalResult TrainingRun::evaluate(const std::string& spec, const char* label) {
  const bool together = distributed_evaluation();
  std::optional<TokenCache> data;
  const auto open = [&] {
    data.emplace(TokenCache::open_or_build(spec, vocab_, cache_dir(config_)));
  };
  if (together)
    runner_.root_first(str("eval-data-", step_, "-", label), open);  // the root builds the cache
  else
    open();
  EvalSettings settings = eval_settings(config_.eval);
  settings.packing = packing_from_name(config_.data.packing);
  progress_.finish();
  const auto start = Clock::now();
  // A rank's model holds only its rows of the tables: without the other ranks (a world of one
  // rank), the root evaluates the whole model of the checkpoint just written (its own rows there
  // are the ones in memory), loaded for this call.
  std::unique_ptr<BiLM> whole;
  if (!runner_.whole_model() && !together) {
    const CheckpointData ckpt = load_checkpoint(last_checkpoint_);
    const NamedTensors* tensors = ckpt.file("model");
    ELMO_CHECK(tensors, last_checkpoint_, ": no model tensors");
    whole = std::make_unique<BiLM>(model_->shape(), model_->options(), device_);
    load_model_tensors(*whole, *tensors, last_checkpoint_);
  }
  EvalResult result = evaluate_corpus(whole ? *whole : *model_, *data, vocab_, settings, {},
                                      together ? runner_.rank_sum() : nullptr);
  log_info(label, " perplexity (full softmax, ", config_.eval.mode, "): ", describe(result), " [",
           format_duration(seconds_since(start)), "]");
  for (const std::string& line : slice_table(result)) log_info("  ", line);
  return result;
}

void TrainingRun::evaluate_and_summarise() {
  const double train_seconds = std::chrono::duration<double>(loop_end_ - train_start_).count();
  nlohmann::json summary;
  summary["steps"] = step_;
  summary["tokens"] = tokens_;
  summary["train_seconds"] = train_seconds;
  const double timed_seconds = std::chrono::duration<double>(loop_end_ - timed_start_).count();
  summary["tokens_per_s"] = timed_tokens_ > 0 ? timed_tokens_ / std::max(1e-9, timed_seconds)
                                              : tokens_ / std::max(1e-9, train_seconds);
  summary["warmup_steps"] = 1;  // tokens_per_s leaves out the first step of this process
  if (step_seconds_.size() > 1) {
    std::vector<double> timed(step_seconds_.begin() + 1, step_seconds_.end());
    std::nth_element(timed.begin(), timed.begin() + timed.size() / 2, timed.end());
    summary["median_step_ms"] = 1e3 * timed[timed.size() / 2];
  }
  summary["final_train_loss"] = last_loss_;
  summary["skipped_steps"] = skipped_steps_;        // loss or gradient norm not finite
  summary["bad_step_reloads"] = bad_step_reloads_;  // returns to a checkpoint for them
  summary["lr_scale"] = optimizer_->lr_scale();
  summary["train_corpus"] = files_.train;
  summary["vocab"] = config_.run.dir + "/vocab.txt";
  summary["checkpoint"] = last_checkpoint_;
  summary["threads"] = num_threads();
  summary["world_size"] = runner_.world_size();
  {  // the embedding and softmax tables here (values + optimizer state), and what every row of
     // them takes (a process alone, or each rank before tables were sharded)
    int64_t host = 0, device = 0, whole = 0;
    const auto add = [&](const Tensor& t) {
      (t.device().is_cpu() ? host : device) += static_cast<int64_t>(t.nbytes());
    };
    const int64_t copies = optimizer_->config().type == "adagrad" ? 2 : 1;
    for (const char* name : {"embedding.weight", "softmax.weight", "softmax.bias"}) {
      const Parameter& p = model_->params().get(name);
      add(p.value);
      whole += copies * model_->shape().vocab * p.row_dim() * static_cast<int64_t>(sizeof(float));
    }
    for (const auto& [name, tensor] : optimizer_->state_tensors())
      if (model_->table_layout(name.substr(0, name.rfind('.')))) add(tensor);
    summary["table_bytes"] = {{"host", host}, {"device", device}, {"every_row", whole}};
  }
  runner_.describe(summary);
  if (!init_report_.is_null()) summary["init_from"] = init_report_;
  summary["device"] = device_.str();
  if (device_.is_cuda()) summary["device_name"] = cuda_device_name(device_.index);
  summary["precision"] = precision_;                         // what the GEMMs computed in
  summary["precision_requested"] = config_.train.precision;  // train.precision
  summary["peak_host_memory_bytes"] = process_peak_rss_bytes();  // VmHWM, so far
  if (device_.is_cuda()) {
    summary["peak_device_memory_bytes"] = cuda_peak_bytes(device_.index);
    log_info("peak device memory: ", cuda_peak_bytes(device_.index) >> 20, " MiB (", device_.str(),
             ", elmo_fast's pool)");
  }
  if (!files_.valid.empty()) {
    // An early stop ends right after its validation: that one is the final one.
    const bool evaluated = last_validation_step_ == step_;
    const EvalResult r = evaluated     ? last_validation_
                         : final_valid_ ? *final_valid_
                                        : evaluate(files_.valid, "validation");
    summary["valid"] = r.to_json();
    if (!evaluated) {
      metrics_->log(step_, validation_scalars(r, seconds_since(run_start_)));
      // The final validation counts too (the other processes have finished: the root decides).
      if (validation_.active()) track_validation(r.mean_perplexity(), false);
    }
    if (files_.synthetic) {
      const double bound = files_.synthetic->perplexity_bound();
      const double ratio = r.mean_perplexity() / bound;
      summary["synthetic_bound_ppl"] = bound;
      summary["ppl_over_bound"] = ratio;
      log_info("synthetic corpus: best reachable perplexity ", str(bound).substr(0, 7),
               "; this model ", str(r.mean_perplexity()).substr(0, 7), " (", 
               str(100.0 * (ratio - 1.0)).substr(0, 5), "% above the bound)");
    }
  }
  if (!files_.test.empty())
    summary["test"] = (final_test_ ? *final_test_ : evaluate(files_.test, "test")).to_json();
  summary["stop_reason"] =
      stopped_early_ ? "early_stopping: " + validation_.stop_reason() : std::string("completed");
  if (validation_.active()) {
    summary["validation"] = validation_.to_json();
    if (validation_.keep_best() && validation_.best_step() >= 0)
      summary["best_checkpoint"] = config_.run.dir + "/checkpoints/best";
  }
  write_file_atomic(config_.run.dir + "/summary.json", summary.dump(2) + "\n");
  log_info("done: ", step_, " steps in ", format_duration(train_seconds), ", ",
           static_cast<int64_t>(summary["tokens_per_s"].get<double>()), " tokens/s; summary in ",
           config_.run.dir, "/summary.json");
}

int train_command(const TrainArgs& args) {
  check_init_args({args.init_from, args.init_vocab, args.init_optimizer}, !args.resume.empty());
  const std::map<std::string, std::string> env = current_environment();
  // Check the config once, before any process is started for it (a scheduler needs none).
  std::optional<Config> loaded;
  LaunchOptions launch = args.launch;
  if (!args.config.empty()) {
    loaded = load_config(args.config, args.overrides);
    launch.timeout_s = loaded->dist.timeout_seconds;
  }
  const ProcessPlan plan = plan_process(launch, env, args.no_cuda ? 0 : cuda_device_count());
  if (plan.kind == ProcessKind::kScheduler) return run_scheduler(plan);
  ELMO_REQUIRE(loaded, "--config is required to train (only --role scheduler runs without one)");
  Config config = std::move(*loaded);
  const std::string run_dir = config.run.dir;
  // Every run ends with run_dir/report.html (app/report.h). Launchers outlive their ranks: they
  // write it from the files when rank 0 could not (a fault), and skip it when rank 0 did.
  switch (plan.kind) {
    case ProcessKind::kLocalLauncher: {
      const int code = run_local_launcher(plan, strip_launch_flags(args.argv));
      write_run_report(run_dir, /*only_if_stale=*/true);
      return code;
    }
    case ProcessKind::kNodeSupervisor: {
      const int code = run_node_supervisor(plan, strip_launch_flags(args.argv));
      write_run_report(run_dir, /*only_if_stale=*/true);
      return code;
    }
    case ProcessKind::kRank: {
      std::unique_ptr<DataParallel> dist;
      try {
        dist = std::make_unique<DataParallel>(plan, config.dist.timeout_seconds);
        DataParallelStepRunner runner(*dist);
        TrainingRun run(std::move(config), args, runner);
        const int code = run.run();  // normal end or stopped by a signal
        if (plan.topology.rank == 0) write_run_report(run_dir);
        return code;
      } catch (const CommError& e) {
        throw Error(dist ? dist->explain(e) : e.what());
      }
    }
    default: {
      LocalStepRunner runner;
      TrainingRun run(std::move(config), args, runner);
      int code = 0;
      try {
        code = run.run();  // normal end or stopped by a signal
      } catch (const UsageError&) {
        throw;  // refused before training: nothing new to report
      } catch (const Error&) {
        write_run_report(run_dir, /*only_if_stale=*/true);  // e.g. diverged: show the curves
        throw;
      }
      write_run_report(run_dir);
      return code;
    }
  }
}

}  // namespace elmo
