// `elmo_fast train`: the training loop. Data set-up, model, optimizer, batches, checkpoints,
// metrics, and the final evaluation; resume continues bit-identically from a checkpoint.
#include <unistd.h>

#include <csignal>
#include <map>
#include <optional>
#include <thread>
#include <chrono>
#include <cmath>
#include <algorithm>
#include <filesystem>

#include "app/commands.h"
#include "app/data_parallel.h"
#include "app/evaluate.h"
#include "app/progress.h"
#include "app/session.h"
#include "io/atomic_file.h"
#include "io/batcher.h"
#include "io/metrics.h"
#include "kernels/log_uniform_sampler.h"
#include "model/optimizer.h"
#include "runtime/cuda_memory.h"
#include "runtime/log.h"
#include "runtime/parallel.h"

namespace elmo {

namespace fs = std::filesystem;

namespace {

volatile std::sig_atomic_t g_stop_signal = 0;
void on_stop_signal(int signal) { g_stop_signal = signal; }

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Resolves train.device/--device/--no_cuda: "auto" is cuda:0 when a GPU is visible and
// --no_cuda is not given, else the CPU; "cuda" / "cuda:N" need that GPU, and --no_cuda refuses
// them (docs/ARCHITECTURE.md, GPU training path).
Device choose_device(const Config& config, const TrainArgs& args) {
  std::string wanted = args.device.empty() ? config.train.device : args.device;
  const int gpus = cuda_device_count();
  if (wanted == "auto") return !args.no_cuda && gpus > 0 ? Device::cuda(0) : Device::cpu();
  const Device device = Device::parse(wanted);
  if (device.is_cuda() && args.no_cuda)
    throw UsageError(str("train.device = \"", wanted, "\" asks for a GPU but --no_cuda refuses ",
                         "it; use \"cpu\" or \"auto\", or drop --no_cuda"));
  if (device.is_cuda() && device.index >= gpus)
    throw UsageError(str("train.device = \"", wanted, "\": ",
                         gpus == 0 ? std::string("no GPU is visible on this machine")
                                   : str("only ", gpus, " GPU(s) are visible (cuda:0..cuda:",
                                         gpus - 1, ")"),
                         "; use \"cpu\" or \"auto\""));
  return device;
}

// train.precision selects the CUDA GEMM mode (runtime/gemm.h); the CPU always computes fp32.
// Asking for tf32/bf16 and for the CPU at the same time (train.device = "cpu", --device cpu,
// --no_cuda) is a contradiction: a usage error before any work, so a CPU run never silently
// measures something other than what was asked. "auto" that finds no GPU is not a request for
// the CPU: that run trains in fp32 with a warning (effective_precision), so one config serves
// GPU machines and CPU-only ones.
void check_precision_request(const Config& config, const TrainArgs& args) {
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

OptimizerOptions optimizer_settings(const Config& config) {
  OptimizerOptions s;
  s.type = config.optimizer.type;
  s.learning_rate = static_cast<float>(config.optimizer.learning_rate);
  s.initial_accumulator = static_cast<float>(config.optimizer.initial_accumulator);
  s.epsilon = static_cast<float>(config.optimizer.epsilon);
  s.clip_norm = static_cast<float>(config.optimizer.clip_norm);
  s.lr_decay = static_cast<float>(config.optimizer.lr_decay);
  s.decay_after_epochs = config.optimizer.decay_after_epochs;
  return s;
}

nlohmann::json rng_to_json(const RngState& s) {
  return {{"seed", s.seed}, {"stream", s.stream}, {"position", s.position}};
}
RngState rng_from_json(const nlohmann::json& j) {
  return {j.at("seed").get<uint64_t>(), j.at("stream").get<uint64_t>(),
          j.at("position").get<uint64_t>()};
}

class TrainingRun {
 public:
  // `dist` is null for a single process.
  TrainingRun(Config config, const TrainArgs& args, DataParallel* dist)
      : config_(std::move(config)), args_(args), dist_(dist) {}
  int run();

 private:
  void set_up_data();
  void set_up_model();
  void resume_from(const std::string& where);
  void save(bool final_save);
  void log_interval(bool force);
  EvalResult evaluate(const std::string& spec, const char* label);
  bool is_root() const { return !dist_ || dist_->is_root(); }
  // Distributed runs: the next batch of this rank and the samples of its step, drawn one step
  // ahead so their tail rows can be requested while the current step computes.
  struct Pending {
    Batch batch[2];
    TokenBatch tokens[2];
    int64_t epoch = 0;
    BatcherState state_after;  // the batcher's position once this batch is drawn
    std::vector<int32_t> samples;
  };
  void draw_pending(Pending& p);
  // Rank 0 before evaluating: every tail row as of the checkpoint just written.
  void load_remote_rows_from(const std::string& checkpoint);

  Config config_;
  TrainArgs args_;
  DataParallel* dist_;
  Pending pending_[2];
  Rng lookahead_sampler_;
  SampleSet lookahead_samples_;
  std::vector<uint8_t> lookahead_seen_;
  bool stop_agreed_ = false, checkpoint_agreed_ = false;
  Device device_;  // where the model trains (choose_device)
  std::string precision_ = "fp32";  // the GEMM precision in effect (effective_precision)
  DataFiles files_;
  Vocab vocab_;
  TokenCache train_data_;
  std::unique_ptr<Batcher> batcher_;
  std::unique_ptr<BiLM> model_;
  std::unique_ptr<Optimizer> optimizer_;
  std::unique_ptr<MetricsLogger> metrics_;
  LstmState states_[2];
  Rng sampler_;
  Progress progress_;

  int64_t step_ = 0, tokens_ = 0, total_steps_ = 0;
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
  std::string last_checkpoint_;
};

void TrainingRun::set_up_data() {
  // In a distributed run rank 0 writes the shared files (builtin corpus, vocabulary, token
  // cache) first; the others then find them in place.
  const auto prepare = [&] {
    files_ = resolve_data_files(config_);
    vocab_ = prepare_vocab(config_, files_, /*rebuild=*/args_.resume.empty() && is_root());
    train_data_ = TokenCache::open_or_build(files_.train, vocab_, cache_dir(config_));
  };
  if (dist_)
    dist_->root_first("data", prepare);
  else
    prepare();
  const TokenStats stats = train_data_.stats();
  log_info("training corpus: ", stats.sentences, " sentences, ", stats.tokens, " tokens, ",
           train_data_.num_shards(), " file(s), ", str(100.0 * stats.unknown_rate()).substr(0, 5),
           "% unknown");
  BatcherOptions options;
  options.rows = config_.train.batch_size;
  options.steps = config_.train.unroll_steps;
  options.shuffle = config_.data.shuffle;
  options.seed = static_cast<uint64_t>(config_.run.seed);
  if (dist_) {
    options.rank = dist_->topology().rank;
    options.world_size = dist_->topology().world_size;
    ELMO_REQUIRE(config_.train.batch_size >= options.world_size, "train.batch_size = ",
                 config_.train.batch_size, " is smaller than the ", options.world_size,
                 " ranks of this run: every rank needs at least one row");
  }
  batcher_ = std::make_unique<Batcher>(train_data_, vocab_, options);
}

void TrainingRun::set_up_model() {
  model_ = std::make_unique<BiLM>(bilm_shape(config_, vocab_.size()), bilm_options(config_),
                                  device_);
  model_->init(static_cast<uint64_t>(config_.run.seed),
               static_cast<float>(config_.model.init_scale),
               static_cast<float>(config_.model.embedding_init_scale));
  optimizer_ = std::make_unique<Optimizer>(model_->params(), optimizer_settings(config_));
  const int64_t rows = dist_ ? batcher_->my_rows().end - batcher_->my_rows().begin
                             : config_.train.batch_size;
  for (int d = 0; d < model_->shape().directions(); ++d) states_[d] = model_->zero_state(rows);

  sampler_ = Rng(static_cast<uint64_t>(config_.run.seed), kRngSampler);
  log_info("model: ", model_->params().numel(), " parameters (vocab ", vocab_.size(),
           ", embedding ", model_->shape().embedding_dim, ", cell ", model_->shape().cell_size,
           ", projection ", model_->shape().proj_dim, ", ", model_->shape().layers, " layers, ",
           model_->shape().directions() == 2 ? "bidirectional" : "forward only", ")");
}

void TrainingRun::resume_from(const std::string& where) {
  const std::string path = where == "latest" ? config_.run.dir : where;
  CheckpointData ckpt = load_checkpoint(path);
  const nlohmann::json& s = ckpt.state;
  const uint64_t shape_hash = model_shape_hash(config_, vocab_.size());
  if (s.value("model_shape_hash", uint64_t{0}) != shape_hash) {
    std::string theirs = "(unknown)";
    if (s.contains("config") && s["config"].is_string()) {
      const Config old = config_from_string(s["config"].get<std::string>(), "checkpoint config");
      theirs = str("cell ", old.model.cell_size, ", projection ", old.model.projection_dim,
                   ", layers ", old.model.layers, ", embedding ", old.model.input_dim(),
                   ", vocab ", s.value("vocab_size", int64_t{0}));
    }
    throw UsageError(str("cannot resume from ", path, ": the checkpoint's model shape (", theirs,
                         ") differs from the config's (cell ", config_.model.cell_size,
                         ", projection ", config_.model.projection_dim, ", layers ",
                         config_.model.layers, ", embedding ", config_.model.input_dim(),
                         ", vocab ", vocab_.size(), "); use the config it was trained with"));
  }
  if (s.value("vocab_hash", uint64_t{0}) != vocab_.hash())
    throw UsageError(str("cannot resume from ", path,
                         ": it was trained with a different vocabulary"));
  if (s.value("batch_size", int64_t{0}) != config_.train.batch_size ||
      s.value("unroll_steps", int64_t{0}) != config_.train.unroll_steps)
    throw UsageError(str("cannot resume from ", path, ": it used train.batch_size = ",
                         s.value("batch_size", int64_t{0}), " and train.unroll_steps = ",
                         s.value("unroll_steps", int64_t{0}),
                         "; the carried LSTM state and data positions need the same values"));
  const NamedTensors* model_file = ckpt.file("model");
  const NamedTensors* optimizer_file = ckpt.file("optimizer");
  const NamedTensors* carry_file = ckpt.file("carry");
  if (!model_file || !optimizer_file || !carry_file)
    throw Error(str(path, ": checkpoint is incomplete (model, optimizer and carry files needed)"));
  load_model_tensors(*model_, *model_file, path);
  for (const auto& [name, tensor] : *optimizer_file) optimizer_->load_state(name, tensor);
  for (int d = 0; d < model_->shape().directions(); ++d) {
    const std::string dir = BiLM::direction_name(d);
    bool found_h = false, found_c = false;
    // A distributed rank keeps its rows [begin, end) of the carried state [L, B, .].
    const RowSplit mine = batcher_->my_rows();
    const auto take_rows = [&](Tensor& into, const Tensor& whole) {
      if (whole.ndim() != 3 || whole.size(1) != config_.train.batch_size)
        throw Error(str(path, ": carried state ", whole.describe(), " does not have ",
                        config_.train.batch_size, " rows"));
      if (into.size(1) == whole.size(1)) return into.copy_from(whole);
      const int64_t width = whole.size(2), rows = into.size(1);
      Tensor part = Tensor::empty(into.shape());  // host; the state may live on a GPU
      for (int64_t l = 0; l < whole.size(0); ++l)
        std::copy_n(whole.data<float>() + (l * whole.size(1) + mine.begin) * width, rows * width,
                    part.data<float>() + l * rows * width);
      into.copy_from(part);
    };
    for (const auto& [name, tensor] : *carry_file) {
      if (name == "carry." + dir + ".h") take_rows(states_[d].h, tensor), found_h = true;
      if (name == "carry." + dir + ".c") take_rows(states_[d].c, tensor), found_c = true;
    }
    if (!found_h || !found_c) throw Error(str(path, ": carried state of ", dir, " is missing"));
  }
  batcher_->restore(BatcherState::from_json(s.at("batcher")));
  sampler_ = Rng(rng_from_json(s.at("sampler_rng")));
  step_ = ckpt.step;
  tokens_ = s.at("tokens").get<int64_t>();
  const int64_t saved_world = s.value("world_size", int64_t{1});
  const int64_t world = dist_ ? dist_->topology().world_size : 1;
  if (saved_world != world)
    log_warn("resuming a run saved by ", saved_world, " rank(s) with ", world,
             ": training continues from the same state, but float sums now run in another "
             "order, so results are not bit-identical to an uninterrupted run");
  log_info("resumed from step ", step_, " (", tokens_, " tokens, epoch ",
           batcher_->epochs_done(), ")");
}

void TrainingRun::save(bool final_save) {
  CheckpointData ckpt;
  ckpt.step = step_;
  nlohmann::json& s = ckpt.state;
  s["tokens"] = tokens_;
  s["epoch"] = batcher_->epochs_done();
  s["config"] = config_to_toml(config_);
  s["config_hash"] = config_hash(config_);
  s["model_shape_hash"] = model_shape_hash(config_, vocab_.size());
  s["vocab_size"] = vocab_.size();
  s["vocab_hash"] = vocab_.hash();
  s["batch_size"] = config_.train.batch_size;
  s["unroll_steps"] = config_.train.unroll_steps;
  s["world_size"] = dist_ ? dist_->topology().world_size : 1;
  // Distributed runs draw the next batch one step ahead: save the position after this step's.
  s["batcher"] = (dist_ ? pending_[0].state_after : batcher_->state()).to_json();
  s["sampler_rng"] = rng_to_json(sampler_.state());
  s["dropout_rng"] = {{"seed", config_.run.seed}, {"counter_based", "philox(seed, step, site)"}};
  if (dist_) {
    // Every rank writes its shard (owned tail rows, its carried-state rows); rank 0 adopts them
    // into the step folder with the replicated tensors, then everybody continues.
    dist_->write_shard(config_.run.dir, step_, states_, model_->shape().directions());
    dist_->barrier(str("checkpoint-", step_, "-shards"));
    if (dist_->is_root()) {
      s["shards"] = dist_->shards_state();
      ckpt.files.emplace_back("model", dist_->replicated_model_tensors());
      ckpt.files.emplace_back("optimizer", dist_->replicated_optimizer_tensors());
      ckpt.adopted = dist_->shard_files(config_.run.dir, step_);
      progress_.finish();
      last_checkpoint_ = save_checkpoint(config_.run.dir, ckpt,
                                         static_cast<int>(config_.checkpoint.keep_last));
      log_info(final_save ? "final checkpoint: " : "checkpoint: ", last_checkpoint_);
    }
    dist_->barrier(str("checkpoint-", step_, "-saved"));
    if (!dist_->is_root()) last_checkpoint_ = str(config_.run.dir, "/checkpoints/step-", step_);
    last_checkpoint_time_ = Clock::now();
    return;
  }
  ckpt.files.emplace_back("model", model_tensors(*model_));
  NamedTensors optimizer_state;
  for (const auto& [name, tensor] : optimizer_->state_tensors())
    optimizer_state.emplace_back(name, tensor);
  ckpt.files.emplace_back("optimizer", optimizer_state);
  NamedTensors carry;
  for (int d = 0; d < model_->shape().directions(); ++d) {
    carry.emplace_back(str("carry.", BiLM::direction_name(d), ".h"), states_[d].h);
    carry.emplace_back(str("carry.", BiLM::direction_name(d), ".c"), states_[d].c);
  }
  ckpt.files.emplace_back("carry", carry);
  progress_.finish();
  last_checkpoint_ = save_checkpoint(config_.run.dir, ckpt,
                                     static_cast<int>(config_.checkpoint.keep_last));
  last_checkpoint_time_ = Clock::now();
  log_info(final_save ? "final checkpoint: " : "checkpoint: ", last_checkpoint_);
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
  metrics_->log(step_, scalars);
  last_loss_ = loss;
  interval_loss_ = interval_nll_[0] = interval_nll_[1] = 0.0;
  interval_steps_ = interval_tokens_ = 0;
  interval_start_ = Clock::now();
}

void TrainingRun::draw_pending(Pending& p) {
  batcher_->next(&p.batch[0], &p.batch[1]);
  p.epoch = batcher_->epoch();
  p.state_after = batcher_->state();
  for (int d = 0; d < model_->shape().directions(); ++d)
    p.tokens[d] = {p.batch[d].rows,          p.batch[d].steps,          p.batch[d].inputs.data(),
                   p.batch[d].targets.data(), config_.train.batch_size, p.batch[d].row_begin};
  if (config_.softmax.type == "sampled") {
    sample_log_uniform_unique(vocab_.size(), config_.softmax.samples, lookahead_sampler_,
                              lookahead_samples_, lookahead_seen_);
    p.samples = lookahead_samples_.ids;
  }
}

void TrainingRun::load_remote_rows_from(const std::string& checkpoint) {
  const CheckpointData ckpt = load_checkpoint(checkpoint);
  const NamedTensors* model = ckpt.file("model");
  ELMO_CHECK(model, checkpoint, ": no model tensors");
  dist_->load_tail_rows(*model);
}

EvalResult TrainingRun::evaluate(const std::string& spec, const char* label) {
  TokenCache data = TokenCache::open_or_build(spec, vocab_, cache_dir(config_));
  EvalSettings settings;
  settings.mode = config_.eval.mode == "sentence" ? EvalMode::kSentence : EvalMode::kStream;
  settings.rows = config_.eval.batch_size;
  settings.steps = config_.eval.unroll_steps;
  settings.max_tokens = config_.eval.max_tokens;
  progress_.finish();
  const auto start = Clock::now();
  EvalResult result = evaluate_corpus(*model_, data, vocab_, settings);
  log_info(label, " perplexity (full softmax, ", config_.eval.mode, "): ", describe(result), " [",
           format_duration(seconds_since(start)), "]");
  return result;
}

int TrainingRun::run() {
  if (dist_ && !dist_->is_root() && log_level() < LogLevel::kWarn) set_log_level(LogLevel::kWarn);
  check_precision_request(config_, args_);
  if (dist_) {
    // A rank's GPU is the one its launcher gave it (--device_ids, or its local rank); every rank
    // must get one of its own, else all train on CPUs (agree_on_device).
    const std::string wanted = args_.device.empty() ? config_.train.device : args_.device;
    if (wanted != "auto" && wanted != "cpu" && wanted != "cuda")
      throw UsageError(str("train.device = \"", wanted, "\" in a distributed run: each rank's ",
                           "GPU comes from --device_ids (or its local rank); use \"auto\", ",
                           "\"cuda\" or \"cpu\""));
    if (wanted == "cuda" && args_.no_cuda)
      throw UsageError("train.device = \"cuda\" asks for GPUs but --no_cuda refuses them; use "
                       "\"cpu\" or \"auto\", or drop --no_cuda");
    device_ = dist_->agree_on_device(wanted != "cpu" && !args_.no_cuda, wanted == "cuda");
  } else {
    device_ = choose_device(config_, args_);
  }
  int threads = static_cast<int>(config_.train.threads);
  if (dist_ && threads == 0)  // ranks sharing a machine share its cores
    threads = std::max(1, static_cast<int>(std::thread::hardware_concurrency()) /
                              std::max(1, dist_->ranks_on_this_host()));
  set_num_threads(threads);
  precision_ = effective_precision(config_, device_);
  log_info("device: ", device_.str(),
           device_.is_cuda() ? str(" (", cuda_device_name(device_.index), ")") : "",
           ", GEMM precision ", precision_, ", ", num_threads(), " CPU thread(s)",
           cuda_device_count() > 0 ? str(" (", cuda_device_count(), " GPU(s) visible)") : "");

  const std::optional<std::string> existing = find_latest_checkpoint(config_.run.dir);
  if (args_.resume.empty() && existing)
    throw UsageError(str("run.dir '", config_.run.dir, "' already holds checkpoints (latest ",
                         *existing, "): pass --resume to continue it, or set another run.dir ",
                         "(e.g. --set run.dir=runs/new)"));
  if (!args_.resume.empty() && args_.resume == "latest" && !existing)
    throw UsageError(str("--resume: no checkpoint in run.dir '", config_.run.dir, "'"));

  set_up_data();
  set_up_model();
  if (!args_.resume.empty()) resume_from(args_.resume);
  if (dist_) {  // after resuming: peers may read this rank's rows as soon as it is attached
    const int64_t hot = config_.dist.hot_rows >= 0
                            ? config_.dist.hot_rows
                            : choose_hot_rows(train_data_, vocab_.size(), config_.dist.hot_coverage);
    DataParallel::DenseSync sync;
    sync.bf16 = config_.dist.allreduce_precision == "bf16";
    sync.overlap = config_.dist.overlap_allreduce;
    dist_->attach(*model_, *optimizer_, hot, sync);
  }

  const int64_t tokens_per_step = config_.train.batch_size * config_.train.unroll_steps;
  total_steps_ = config_.train.max_steps > 0
                     ? config_.train.max_steps
                     : static_cast<int64_t>(std::ceil(config_.train.epochs *
                                                      batcher_->epoch_positions() /
                                                      static_cast<double>(tokens_per_step)));
  total_steps_ = std::max<int64_t>(total_steps_, 1);
  if (is_root())
    metrics_ = std::make_unique<MetricsLogger>(config_.run.dir, config_.metrics.jsonl,
                                               config_.metrics.tensorboard);
  log_info("training ", total_steps_ - step_, " steps of ", config_.train.batch_size, " x ",
           config_.train.unroll_steps, " tokens (", config_.softmax.type, " softmax",
           config_.softmax.type == "sampled" ? str(", ", config_.softmax.samples, " samples") : "",
           ") into ", config_.run.dir);

  g_stop_signal = 0;
  auto old_int = std::signal(SIGINT, on_stop_signal);
  auto old_term = std::signal(SIGTERM, on_stop_signal);
  struct RestoreSignals {
    decltype(old_int) i, t;
    ~RestoreSignals() { std::signal(SIGINT, i), std::signal(SIGTERM, t); }
  } restore_signals{old_int, old_term};

  interval_start_ = last_checkpoint_time_ = Clock::now();
  const auto train_start = Clock::now();
  Batch batch[2];
  TokenBatch tokens[2];
  const int dirs = model_->shape().directions();
  const int64_t first_step = step_;
  const bool sampled = config_.softmax.type == "sampled";
  if (dist_ && step_ < total_steps_) {
    lookahead_sampler_ = sampler_;  // draws what train_step's sampler will draw, one step ahead
    lookahead_seen_.assign(static_cast<size_t>(vocab_.size()), 0);
    draw_pending(pending_[0]);
    dist_->request_rows(step_, pending_[0].tokens, dirs, sampled ? &pending_[0].samples : nullptr);
  }
  while (step_ < total_steps_ && g_stop_signal == 0 && !stop_agreed_) {
    const auto step_start = Clock::now();
    TrainStepResult result;
    double grad_norm = 0.0;
    float lr = 0.0f;
    bool checkpoint_by_time = config_.checkpoint.every_minutes > 0 &&
                              seconds_since(last_checkpoint_time_) >=
                                  60.0 * config_.checkpoint.every_minutes;
    if (dist_) {
      Pending& current = pending_[0];
      dist_->wait_rows(step_);
      if (step_ + 1 < total_steps_) {  // the next step's rows travel while this one computes
        draw_pending(pending_[1]);
        dist_->request_rows(step_ + 1, pending_[1].tokens, dirs,
                            sampled ? &pending_[1].samples : nullptr);
      }
      dist_->begin_step();
      const TrainStepResult local =
          model_->train_step(current.tokens, states_, static_cast<uint64_t>(step_), sampler_);
      lr = optimizer_->learning_rate(current.epoch);
      const StepTotals totals =
          dist_->finish_step(step_, lr, local, current.tokens[0].rows, config_.train.batch_size,
                             g_stop_signal != 0, checkpoint_by_time);
      result.loss = totals.loss;
      result.nll[0] = totals.nll[0];
      result.nll[1] = totals.nll[1];
      grad_norm = totals.grad_norm;
      stop_agreed_ = totals.stop;
      checkpoint_by_time = totals.checkpoint;  // rank 0's clock decides for everyone
      if (!std::isfinite(result.loss))
        throw Error(str("training diverged at step ", step_, ": loss is ", result.loss,
                        "; lower optimizer.learning_rate or set optimizer.clip_norm"));
    } else {
      batcher_->next(&batch[0], &batch[1]);
      const int64_t epoch = batcher_->epoch();
      for (int d = 0; d < dirs; ++d)
        tokens[d] = {batch[d].rows, batch[d].steps, batch[d].inputs.data(),
                     batch[d].targets.data()};
      result = model_->train_step(tokens, states_, static_cast<uint64_t>(step_), sampler_);
      if (!std::isfinite(result.loss))
        throw Error(str("training diverged at step ", step_, ": loss is ", result.loss,
                        "; lower optimizer.learning_rate or set optimizer.clip_norm"));
      const Optimizer::StepStats stats = optimizer_->step(epoch);
      grad_norm = stats.grad_norm;
      lr = stats.lr;
    }
    ++step_;
    tokens_ += tokens_per_step;
    step_seconds_.push_back(seconds_since(step_start));
    last_grad_norm_ = grad_norm;
    last_lr_ = lr;
    interval_loss_ += result.loss;
    interval_nll_[0] += result.nll[0];
    interval_nll_[1] += result.nll[1];
    ++interval_steps_;
    interval_tokens_ += tokens_per_step;
    if (step_ == first_step + 1) {
      timed_start_ = Clock::now();
    } else {
      timed_tokens_ += tokens_per_step;
    }
    if (is_root()) log_interval(step_ == total_steps_);
    const bool by_steps =
        config_.checkpoint.every_steps > 0 && step_ % config_.checkpoint.every_steps == 0;
    bool saved = false;
    if ((by_steps || checkpoint_by_time) && step_ < total_steps_ && !stop_agreed_) {
      save(false);
      saved = true;
    }
    if (config_.train.eval_every > 0 && step_ % config_.train.eval_every == 0 &&
        !files_.valid.empty() && step_ < total_steps_ && !stop_agreed_) {
      if (dist_) {
        // Rank 0 evaluates with every tail row as of a checkpoint of this step; the others wait.
        if (!saved) save(false);
        if (dist_->is_root()) {
          load_remote_rows_from(last_checkpoint_);
          const EvalResult r = evaluate(files_.valid, "validation");
          metrics_->log(step_, {{"valid_ppl", r.mean_perplexity()}});
        }
        dist_->barrier(str("eval-", step_));
      } else {
        const EvalResult r = evaluate(files_.valid, "validation");
        metrics_->log(step_, {{"valid_ppl", r.mean_perplexity()}});
      }
    }
    if (dist_) std::swap(pending_[0], pending_[1]);
  }
  const auto loop_end = Clock::now();
  if (is_root()) log_interval(true);
  const double train_seconds = std::chrono::duration<double>(loop_end - train_start).count();
  save(true);
  if (dist_) dist_->finish();  // clean goodbye: rank 0 may evaluate long after the others left
  if (g_stop_signal != 0 || stop_agreed_) {
    const int signal = g_stop_signal != 0 ? static_cast<int>(g_stop_signal) : SIGTERM;
    if (is_root())
      log_warn("stopped by signal ", signal, " at step ", step_, "; continue with --resume");
    return 128 + signal;
  }
  if (!is_root()) return 0;  // rank 0 evaluates and writes the summary
  if (dist_) load_remote_rows_from(last_checkpoint_);

  nlohmann::json summary;
  summary["steps"] = step_;
  summary["tokens"] = tokens_;
  summary["train_seconds"] = train_seconds;
  const double timed_seconds = std::chrono::duration<double>(loop_end - timed_start_).count();
  summary["tokens_per_s"] = timed_tokens_ > 0 ? timed_tokens_ / std::max(1e-9, timed_seconds)
                                              : tokens_ / std::max(1e-9, train_seconds);
  summary["warmup_steps"] = 1;  // tokens_per_s leaves out the first step of this process
  if (step_seconds_.size() > 1) {
    std::vector<double> timed(step_seconds_.begin() + 1, step_seconds_.end());
    std::nth_element(timed.begin(), timed.begin() + timed.size() / 2, timed.end());
    summary["median_step_ms"] = 1e3 * timed[timed.size() / 2];
  }
  summary["final_train_loss"] = last_loss_;
  summary["train_corpus"] = files_.train;
  summary["vocab"] = config_.run.dir + "/vocab.txt";
  summary["checkpoint"] = last_checkpoint_;
  summary["threads"] = num_threads();
  summary["world_size"] = dist_ ? dist_->topology().world_size : 1;
  if (dist_) summary["hot_rows"] = dist_->hot_rows();
  summary["device"] = device_.str();
  if (device_.is_cuda()) summary["device_name"] = cuda_device_name(device_.index);
  summary["precision"] = precision_;                         // what the GEMMs computed in
  summary["precision_requested"] = config_.train.precision;  // train.precision
  if (device_.is_cuda()) {
    summary["peak_device_memory_bytes"] = cuda_peak_bytes(device_.index);
    log_info("peak device memory: ", cuda_peak_bytes(device_.index) >> 20, " MiB (", device_.str(),
             ", elmo_fast's pool)");
  }
  if (!files_.valid.empty()) {
    const EvalResult r = evaluate(files_.valid, "validation");
    summary["valid"] = r.to_json();
    metrics_->log(step_, {{"valid_ppl", r.mean_perplexity()}});
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
  if (!files_.test.empty()) summary["test"] = evaluate(files_.test, "test").to_json();
  write_file_atomic(config_.run.dir + "/summary.json", summary.dump(2) + "\n");
  log_info("done: ", step_, " steps in ", format_duration(train_seconds), ", ",
           static_cast<int64_t>(summary["tokens_per_s"].get<double>()), " tokens/s; summary in ",
           config_.run.dir, "/summary.json");
  return 0;
}

}  // namespace

int train_command(const TrainArgs& args) {
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
  switch (plan.kind) {
    case ProcessKind::kLocalLauncher:
      return run_local_launcher(plan, strip_launch_flags(args.argv));
    case ProcessKind::kNodeSupervisor:
      return run_node_supervisor(plan, strip_launch_flags(args.argv));
    case ProcessKind::kRank: {
      std::unique_ptr<DataParallel> dist;
      try {
        dist = std::make_unique<DataParallel>(plan, config.dist.timeout_seconds);
        TrainingRun run(std::move(config), args, dist.get());
        return run.run();
      } catch (const CommError& e) {
        throw Error(dist ? dist->explain(e) : e.what());
      }
    }
    default: {
      TrainingRun run(std::move(config), args, nullptr);
      return run.run();
    }
  }
}

}  // namespace elmo
