// The two ways a process runs training steps: see step_runner.h.
#include "app/step_runner.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <utility>

#include "app/data_parallel.h"
#include "app/session.h"
#include "comm/kv_store.h"
#include "kernels/pointwise.h"
#include "runtime/cuda_memory.h"
#include "runtime/host_memory.h"
#include "runtime/log.h"

namespace elmo {

namespace {

// One direction's batch as the model takes it: rows [row_begin, row_begin + rows) of a global
// batch of `global_rows`.
TokenBatch tokens_of(const Batch& batch, int64_t global_rows) {
  return {batch.rows,           batch.steps, batch.inputs.data(),
          batch.targets.data(), global_rows, batch.row_begin};
}

// Contiguous packing restarts every row from zero state at the first batch of an epoch
// (io/batcher.h); sentence packing never does.
void reset_state_if_asked(const Batch& batch, LstmState* states, int directions) {
  if (!batch.reset_state) return;
  for (int d = 0; d < directions; ++d) {
    states[d].h.zero_();
    states[d].c.zero_();
  }
}

}  // namespace

// ---- Non-finite steps: the test hook and the carried state -----------------------------------

NanInjection& NanInjection::instance() {
  static NanInjection injection([] {
    const char* value = std::getenv("ELMO_INJECT_NAN_STEPS");
    return std::string(value ? value : "");
  }());
  return injection;
}

NanInjection::NanInjection(const std::string& spec) {
  size_t at = 0;
  while (at < spec.size()) {
    size_t comma = spec.find(',', at);
    if (comma == std::string::npos) comma = spec.size();
    std::string item = spec.substr(at, comma - at);
    at = comma + 1;
    item.erase(0, item.find_first_not_of(' '));
    item.erase(item.find_last_not_of(' ') + 1);
    if (item.empty()) continue;
    const bool loss = item.rfind("loss:", 0) == 0;
    const std::string digits = loss ? item.substr(5) : item;
    int64_t n = 0;
    bool ok = !digits.empty() && digits.size() <= 15;
    for (const char c : digits) {
      ok = ok && c >= '0' && c <= '9';
      if (ok) n = n * 10 + (c - '0');
    }
    if (!ok || n < 1)
      throw UsageError(str("ELMO_INJECT_NAN_STEPS = \"", spec, "\": '", item,
                           "' is neither a step N >= 1 nor loss:N (a test hook that poisons "
                           "steps, docs/FAULTS.md; unset it to train normally)"));
    (loss ? loss_steps_ : gradient_steps_).push_back(n);
  }
}

namespace {
bool take(std::vector<int64_t>& steps, int64_t n) {
  const auto it = std::find(steps.begin(), steps.end(), n);
  if (it == steps.end()) return false;
  steps.erase(it);
  return true;
}
}  // namespace

bool NanInjection::gradient(int64_t n) { return take(gradient_steps_, n); }
bool NanInjection::loss(int64_t n) { return take(loss_steps_, n); }

void inject_nan(int64_t step, bool last_process, BiLM& model, TrainStepResult& result) {
  if (!last_process) return;
  NanInjection& hook = NanInjection::instance();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  if (hook.loss(step + 1)) {
    result.loss = result.nll[0] = result.nll[1] = nan;
    log_warn("ELMO_INJECT_NAN_STEPS: the loss of step ", step + 1, " is set to NaN (test hook)");
  }
  if (!hook.gradient(step + 1)) return;
  for (Parameter* p : model.params().all()) {
    Tensor& g = p->row_sparse ? p->sparse_grad.values : p->grad;
    if ((p->row_sparse && p->sparse_grad.ids.empty()) || !g.defined() || g.numel() == 0) continue;
    fill_floats(g.device(), g.data<float>(), 1, nan);
    log_warn("ELMO_INJECT_NAN_STEPS: the gradient of ", p->name, " in step ", step + 1,
             " holds a NaN (test hook)");
    return;
  }
}

int64_t reset_nonfinite_rows(LstmState& state) {
  if (!state.h.defined() || state.h.numel() == 0) return 0;
  std::vector<float> h = state.h.to_floats(), c = state.c.to_floats();
  const int64_t layers = state.h.size(0), rows = state.h.size(1);
  const int64_t h_width = state.h.size(2), c_width = state.c.size(2);
  std::vector<char> bad(static_cast<size_t>(rows), 0);
  for (int64_t l = 0; l < layers; ++l)
    for (int64_t r = 0; r < rows; ++r) {
      const float* hr = h.data() + (l * rows + r) * h_width;
      const float* cr = c.data() + (l * rows + r) * c_width;
      for (int64_t i = 0; i < h_width && !bad[r]; ++i) bad[r] = !std::isfinite(hr[i]);
      for (int64_t i = 0; i < c_width && !bad[r]; ++i) bad[r] = !std::isfinite(cr[i]);
    }
  const int64_t count = std::count(bad.begin(), bad.end(), 1);
  if (count == 0) return 0;
  for (int64_t l = 0; l < layers; ++l)
    for (int64_t r = 0; r < rows; ++r)
      if (bad[r]) {
        std::fill_n(h.data() + (l * rows + r) * h_width, h_width, 0.0f);
        std::fill_n(c.data() + (l * rows + r) * c_width, c_width, 0.0f);
      }
  state.h.copy_from(Tensor::from_floats(h, state.h.shape()));
  state.c.copy_from(Tensor::from_floats(c, state.c.shape()));
  return count;
}

namespace {
// What a skipped step leaves to clean up besides its gradients: carried states that are not
// finite (a forward pass that overflowed) would poison every later step of their rows.
void reset_nonfinite_states(LstmState* states, int dirs, int64_t step) {
  int64_t rows = 0;
  for (int d = 0; d < dirs; ++d) rows += reset_nonfinite_rows(states[d]);
  if (rows > 0)
    log_warn("step ", step + 1, ": the carried LSTM state of ", rows,
             " row(s) was not finite and starts again from zero");
}
}  // namespace

// ---- LocalStepRunner ------------------------------------------------------------------------

// train.device / --device / --no_cuda: "auto" is cuda:0 when a GPU is visible and --no_cuda is
// not given, else the CPU; "cuda" / "cuda:N" need that GPU, and --no_cuda refuses them
// (docs/ARCHITECTURE.md, GPU training path).
Device LocalStepRunner::choose_device(const Config& config, const TrainArgs& args) {
  std::string wanted = args.device.empty() ? config.train.device : args.device;
  const int gpus = cuda_device_count();
  if (wanted == "auto") return !args.no_cuda && gpus > 0 ? Device::cuda(0) : Device::cpu();
  const Device device = Device::parse(wanted);
  if (device.is_cuda() && args.no_cuda)
    throw UsageError(str("train.device = \"", wanted, "\" asks for a GPU but --no_cuda refuses ",
                         "it; use \"cpu\" or \"auto\", or drop --no_cuda"));
  if (device.is_cuda() && device.index >= gpus) {
    if (!cuda_compiled_in())
      throw UsageError(
          str("train.device = \"", wanted, "\": no GPU is visible: ", kCpuOnlyBuildMessage));
    throw UsageError(
        str("train.device = \"", wanted, "\": ",
            gpus == 0 ? std::string("no GPU is visible on this machine")
                      : str("only ", gpus, " GPU(s) are visible (cuda:0..cuda:", gpus - 1, ")"),
            "; use \"cpu\" or \"auto\""));
  }
  return device;
}

void LocalStepRunner::root_first(const std::string&, const std::function<void()>& work) { work(); }

StepOutcome LocalStepRunner::run_step(int64_t step, bool, bool checkpoint_due) {
  Batcher& batcher = *parts_.batcher;
  batcher.next(&batch_[0], &batch_[1]);
  const int64_t epoch = batcher.epoch();
  TokenBatch tokens[2];
  for (int d = 0; d < parts_.model->shape().directions(); ++d)
    tokens[d] = tokens_of(batch_[d], parts_.config->train.batch_size);
  reset_state_if_asked(batch_[0], parts_.states, parts_.model->shape().directions());
  TrainStepResult result =
      parts_.model->train_step(tokens, parts_.states, static_cast<uint64_t>(step));
  inject_nan(step, /*last_process=*/true, *parts_.model, result);
  // Optimizer::step in its pieces, so that a step that is not finite changes nothing.
  Optimizer& optimizer = *parts_.optimizer;
  StepOutcome outcome;
  outcome.loss = result.loss;
  outcome.nll[0] = result.nll[0];
  outcome.nll[1] = result.nll[1];
  outcome.grad_norm = optimizer.global_grad_norm();
  outcome.lr = optimizer.learning_rate(epoch);
  outcome.checkpoint = checkpoint_due;
  outcome.skipped = !std::isfinite(outcome.loss) || !std::isfinite(outcome.grad_norm);
  if (outcome.skipped)
    reset_nonfinite_states(parts_.states, parts_.model->shape().directions(), step);
  else
    optimizer.apply(outcome.lr, optimizer.clip_scale(outcome.grad_norm));
  parts_.model->params().zero_grads();
  return outcome;
}

std::string LocalStepRunner::write_checkpoint(CheckpointData& ckpt, const std::string& run_dir,
                                              int keep_last) {
  const BiLM& model = *parts_.model;
  ckpt.files.emplace_back("model", model_tensors(model));
  NamedTensors optimizer_state;
  for (const auto& [name, tensor] : parts_.optimizer->state_tensors())
    optimizer_state.emplace_back(name, tensor);
  ckpt.files.emplace_back("optimizer", optimizer_state);
  NamedTensors carry;
  for (int d = 0; d < model.shape().directions(); ++d) {
    carry.emplace_back(str("carry.", BiLM::direction_name(d), ".h"), parts_.states[d].h);
    carry.emplace_back(str("carry.", BiLM::direction_name(d), ".c"), parts_.states[d].c);
  }
  ckpt.files.emplace_back("carry", carry);
  return save_checkpoint(run_dir, ckpt, keep_last);
}

void LocalStepRunner::describe(nlohmann::json&) const {}

// ---- DataParallelStepRunner -----------------------------------------------------------------

bool DataParallelStepRunner::is_root() const { return dist_.is_root(); }
int DataParallelStepRunner::rank() const { return dist_.topology().rank; }
int DataParallelStepRunner::world_size() const { return dist_.topology().world_size; }
int DataParallelStepRunner::processes_on_this_host() const { return dist_.ranks_on_this_host(); }

// A rank's GPU is the one its launcher gave it (--device_ids, or its local rank); every rank
// must get one of its own, else all train on CPUs (DataParallel::agree_on_device).
Device DataParallelStepRunner::choose_device(const Config& config, const TrainArgs& args) {
  const std::string wanted = args.device.empty() ? config.train.device : args.device;
  if (wanted != "auto" && wanted != "cpu" && wanted != "cuda")
    throw UsageError(str("train.device = \"", wanted, "\" in a distributed run: each rank's ",
                         "GPU comes from --device_ids (or its local rank); use \"auto\", ",
                         "\"cuda\" or \"cpu\""));
  if (wanted == "cuda" && args.no_cuda)
    throw UsageError(
        "train.device = \"cuda\" asks for GPUs but --no_cuda refuses them; use "
        "\"cpu\" or \"auto\", or drop --no_cuda");
  return dist_.agree_on_device(wanted != "cpu" && !args.no_cuda, wanted == "cuda");
}

void DataParallelStepRunner::root_first(const std::string& what,
                                        const std::function<void()>& work) {
  dist_.root_first(what, work);
}

int64_t DataParallelStepRunner::hot_rows(const Config& config, const TokenCache& train_data,
                                         int64_t vocab) {
  if (hot_rows_ < 0)
    hot_rows_ = std::clamp<int64_t>(
        config.dist.hot_rows >= 0 ? config.dist.hot_rows
                                  : choose_hot_rows(train_data, vocab, config.dist.hot_coverage),
        0, vocab);
  return hot_rows_;
}

// Each table group stores the hot head, this rank's tail rows and a step cache with room for
// the most remote rows one step can ask for: the ids of this rank's tokens in every direction
// (embedding), and their targets plus the samples (softmax), at most the tail it does not own.
// Only the rows written become resident (the cache is allocated, not touched, up front). The
// full softmax reads every row at every step: its table keeps the full-size layout.
TableLayouts DataParallelStepRunner::table_layouts(const Config& config,
                                                   const TokenCache& train_data, int64_t vocab) {
  const int64_t hot = hot_rows(config, train_data, vocab);
  const int rank = dist_.topology().rank, world = dist_.topology().world_size;
  const int64_t local_rows = (config.train.batch_size + world - 1) / world;
  const int64_t tokens =
      local_rows * config.train.unroll_steps * (config.model.bidirectional ? 2 : 1);
  const int64_t remote =
      std::max<int64_t>(0, vocab - RowLayout::sharded(vocab, hot, rank, world, 0).home());
  TableLayouts layouts;
  layouts.embedding = RowLayout::sharded(vocab, hot, rank, world, std::min(remote, tokens));
  layouts.softmax = config.softmax.type == "full"
                        ? RowLayout::whole(vocab)
                        : RowLayout::sharded(vocab, hot, rank, world,
                                             std::min(remote, tokens + config.softmax.samples));
  return layouts;
}

// After a resume has loaded the model: peers may read this rank's rows as soon as it is
// attached.
void DataParallelStepRunner::attach(const TrainingParts& parts) {
  parts_ = parts;
  const Config& config = *parts.config;
  const int64_t hot = hot_rows(config, *parts.train_data, parts.model->shape().vocab);
  DataParallel::DenseSync sync;
  sync.bf16 = config.dist.allreduce_precision == "bf16";
  sync.overlap = config.dist.overlap_allreduce;
  dist_.attach(*parts.model, *parts.optimizer, hot, sync);
  // Every rank's table bytes, for the log and summary.json (collective: each rank fills its
  // place, the sum over ranks has one contribution per place).
  const int world = dist_.topology().world_size, rank = dist_.topology().rank;
  std::vector<double> bytes(static_cast<size_t>(2 * world), 0.0);
  const DataParallel::TableBytes mine = dist_.table_bytes();
  bytes[2 * rank] = static_cast<double>(mine.host);
  bytes[2 * rank + 1] = static_cast<double>(mine.device);
  dist_.rank_sum().sum(bytes.data(), static_cast<int64_t>(bytes.size()));
  table_bytes_.clear();
  std::string line;
  for (int r = 0; r < world; ++r) {
    table_bytes_.emplace_back(static_cast<int64_t>(bytes[2 * r]),
                              static_cast<int64_t>(bytes[2 * r + 1]));
    line += str(r ? ", " : "", "rank ", r, " ", table_bytes_.back().first >> 20, " MiB host / ",
                table_bytes_.back().second >> 20, " MiB device");
  }
  log_info("table bytes (values + optimizer state of the embedding and softmax): ", line);
  state_after_ = parts.batcher->state();
}

void DataParallelStepRunner::prefetch(int64_t step, Pending& p) {
  Batcher& batcher = *parts_.batcher;
  batcher.next(&p.batch[0], &p.batch[1]);
  p.epoch = batcher.epoch();
  p.state_after = batcher.state();
  prefetched_ = step;
  const int dirs = parts_.model->shape().directions();
  for (int d = 0; d < dirs; ++d)
    p.tokens[d] = tokens_of(p.batch[d], parts_.config->train.batch_size);
  // The softmax rows of the step: its targets and negative samples (every row: full softmax).
  dist_.request_rows(step, p.tokens, dirs, parts_.model->plan_step(static_cast<uint64_t>(step)));
}

void DataParallelStepRunner::start(int64_t first_step, int64_t total_steps) {
  total_steps_ = total_steps;
  if (first_step < total_steps) prefetch(first_step, current_);
}

StepOutcome DataParallelStepRunner::run_step(int64_t step, bool stop_requested,
                                             bool checkpoint_due) {
  dist_.wait_rows(step);
  prefetched_ = -1;
  // The next step's rows travel while this one computes.
  if (step + 1 < total_steps_) prefetch(step + 1, next_);
  dist_.begin_step();
  reset_state_if_asked(current_.batch[0], parts_.states, parts_.model->shape().directions());
  TrainStepResult local =
      parts_.model->train_step(current_.tokens, parts_.states, static_cast<uint64_t>(step));
  inject_nan(step, rank() == world_size() - 1, *parts_.model, local);
  const float lr = parts_.optimizer->learning_rate(current_.epoch);
  const StepTotals totals =
      dist_.finish_step(step, lr, local, current_.tokens[0].rows, parts_.config->train.batch_size,
                        stop_requested, checkpoint_due);
  if (totals.skipped)
    reset_nonfinite_states(parts_.states, parts_.model->shape().directions(), step);
  state_after_ = current_.state_after;
  std::swap(current_, next_);
  StepOutcome outcome;
  outcome.loss = totals.loss;
  outcome.nll[0] = totals.nll[0];
  outcome.nll[1] = totals.nll[1];
  outcome.grad_norm = totals.grad_norm;
  outcome.lr = lr;
  outcome.stop = totals.stop;
  outcome.checkpoint = totals.checkpoint;  // rank 0's clock decides for everyone
  outcome.skipped = totals.skipped;
  return outcome;
}

// The step prefetched after the last one run is completed without gradients, so that the row
// exchange's step protocol stays whole; the next prefetch starts a fresh step there.
void DataParallelStepRunner::abandon_ahead() {
  if (prefetched_ >= 0) dist_.abandon_step(prefetched_);
  prefetched_ = -1;
  dist_.restart_steps();
}

void DataParallelStepRunner::restored() {
  dist_.tables_restored();
  state_after_ = parts_.batcher->state();
  dist_.barrier("restored");  // nobody asks for rows before every owner holds the restored ones
}

// Every rank writes its shard (owned tail rows, its carried-state rows); rank 0 adopts them
// into the step folder with the replicated tensors, then everybody continues.
// A write that fails on one rank (a full disk, say) fails on every rank with the same message,
// and nothing half-written stays: the ranks agree on each phase instead of only meeting.
std::string DataParallelStepRunner::write_checkpoint(CheckpointData& ckpt,
                                                     const std::string& run_dir, int keep_last) {
  const int64_t step = ckpt.step;
  const int64_t write = ++checkpoint_writes_;  // the same count on every rank
  const auto attempt = [](const std::function<void()>& work) -> std::string {
    try {
      work();
    } catch (const CommError&) {
      throw;  // a lost peer is not a write error
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  std::string error = attempt(
      [&] { dist_.write_shard(run_dir, step, parts_.states, parts_.model->shape().directions()); });
  error = dist_.agree_on_errors(str("checkpoint-", write, "-shards"), error);
  std::string path = str(run_dir, "/checkpoints/step-", step);
  if (error.empty() && dist_.is_root())
    error = attempt([&] {
      ckpt.state["shards"] = dist_.shards_state();
      ckpt.files.emplace_back("model", dist_.replicated_model_tensors());
      ckpt.files.emplace_back("optimizer", dist_.replicated_optimizer_tensors());
      ckpt.adopted = dist_.shard_files(run_dir, step);
      path = save_checkpoint(run_dir, ckpt, keep_last);
    });
  if (!error.empty()) dist_.discard_shards(run_dir, step);
  error = dist_.agree_on_errors(str("checkpoint-", write, "-saved"), error);
  if (!error.empty()) {
    dist_.discard_shards(run_dir, step);
    throw Error(error);
  }
  return path;
}

RankSum* DataParallelStepRunner::rank_sum() { return &dist_.rank_sum(); }

void DataParallelStepRunner::barrier(const std::string& name) { dist_.barrier(name); }

double DataParallelStepRunner::share_from_root(double value) {
  return dist_.broadcast_from_root(value);
}

void DataParallelStepRunner::finish() {
  // Every rank's peak resident memory (VmHWM) before the ranks leave, for the log and
  // summary.json (collective, like the table bytes at attach).
  const int world = dist_.topology().world_size, rank = dist_.topology().rank;
  std::vector<double> peaks(static_cast<size_t>(world), 0.0);
  peaks[rank] = static_cast<double>(process_peak_rss_bytes());
  dist_.rank_sum().sum(peaks.data(), world);
  peak_host_bytes_.assign(peaks.begin(), peaks.end());
  std::string line;
  for (int r = 0; r < world; ++r)
    line += str(r ? ", " : "", "rank ", r, " ", peak_host_bytes_[r] >> 20, " MiB");
  if (is_root()) log_info("peak host memory (VmHWM): ", line);
  dist_.finish();
}

void DataParallelStepRunner::describe(nlohmann::json& summary) const {
  summary["hot_rows"] = dist_.hot_rows();
  nlohmann::json per_rank = nlohmann::json::array();
  for (const auto& [host, device] : table_bytes_)
    per_rank.push_back({{"host", host}, {"device", device}});
  summary["table_bytes_per_rank"] = per_rank;
  if (!peak_host_bytes_.empty()) summary["peak_host_memory_bytes_per_rank"] = peak_host_bytes_;
}

}  // namespace elmo
