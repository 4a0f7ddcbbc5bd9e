// The arithmetic of a training run: see training_plan.h. Every item below names the buffers it
// counts; f32 unless said otherwise.
#include "app/training_plan.h"

#include <algorithm>
#include <cmath>

#include "io/batcher.h"
#include "model/full_softmax.h"
#include "runtime/error.h"

namespace elmo {

namespace {

constexpr int64_t kF32 = 4;
constexpr int64_t kI32 = 4;
constexpr int64_t kCublasWorkspace = int64_t{32} << 20;  // per stream that runs GEMMs
// Device buffers grown by model/sampled_softmax.cpp `ensure` get 25% slack.
constexpr double kDeviceSlack = 1.25;
// Sentence-mode validation batches are as long as their longest sentence, which is not known
// before the text is read: planned as this many positions.
constexpr int64_t kSentenceModeSteps = 64;

struct Dims {
  int64_t V, E, C, P, H, L, S, dirs;
  int64_t b, T, N;  // this rank's rows, unroll steps, positions b x T
  int64_t in(int64_t l) const { return l == 0 ? E : H; }
  int64_t lstm_layer_params(int64_t l) const { return 4 * C * in(l) + 4 * C * H + 4 * C + P * C; }
};

Dims dims_of(const PlanInputs& in) {
  const Config& c = *in.config;
  Dims d;
  d.V = in.vocab;
  d.E = c.model.input_dim();
  d.C = c.model.cell_size;
  d.P = c.model.projection_dim;
  d.H = c.model.output_dim();
  d.L = c.model.layers;
  d.S = c.softmax.type == "sampled" ? c.softmax.samples : 0;
  d.dirs = c.model.bidirectional ? 2 : 1;
  const RowSplit mine = split_rows(c.train.batch_size, 0, in.world_size);  // rank 0: the most
  d.b = mine.end - mine.begin;
  d.T = c.train.unroll_steps;
  d.N = d.b * d.T;
  return d;
}

// What one LSTM layer keeps between forward and backward for N = b x T positions, and the
// stack's per-layer buffers (LstmLayerWorkspace, LstmStack::Layer).
int64_t lstm_layer_activations(const Dims& d, int64_t l, const ModelConfig& m) {
  const bool project = d.P > 0;
  int64_t floats = d.N * 4 * d.C;                        // gates_ [T, B, 4C]
  floats += d.N * d.C;                                   // c_ [T, B, C]
  if (m.cell_clip > 0) floats += d.N * d.C;              // c_raw_
  if (project) floats += d.N * d.C + d.N * d.P;          // m_, dr_
  if (project && m.proj_clip > 0) floats += d.N * d.P;   // r_
  floats += d.b * d.H + 3 * d.b * d.C + d.N;             // h0_, c0_, dm_, dc_, ones_
  if (m.dropout > 0) floats += d.N * d.in(l);            // x_drop
  floats += d.N * d.H;                                   // y
  if (m.skip_connections && l > 0) floats += d.N * d.H;  // out (residual sum)
  return floats * kF32;
}

// The stack's buffers outside its layers: the top dropout and the backward ping-pong pair.
int64_t lstm_stack_buffers(const Dims& d, const ModelConfig& m) {
  int64_t floats = 2 * d.N * std::max(d.E, d.H);  // grad_a_, grad_b_
  if (m.dropout > 0) floats += d.N * d.H;         // top_drop_
  return floats * kF32;
}

// Validation: N_e = eval.batch_size x steps rows per direction through the full softmax
// (workspace logits [N_e, chunk] per direction), the embedding and ids of a batch, its states,
// and what the LSTM buffers shared with training grow by when N_e exceeds training's N.
int64_t validation_bytes(const Dims& d, const Config& c) {
  const int64_t steps = c.eval.mode == "stream" ? c.eval.unroll_steps : kSentenceModeSteps;
  const int64_t rows = c.eval.batch_size, n = rows * steps;
  const int64_t chunk = std::min(kFullSoftmaxChunk, d.V);
  // logits; per row max, sum, target logit, lse, NLL, and the per-position NLLs evaluate keeps
  int64_t bytes = d.dirs * (n * chunk * kF32 + n * (kF32 + 8 + kF32 + kF32 + 8 + 8));
  bytes += d.dirs * (n * d.E * kF32 + 2 * n * kI32);  // embedded, ids
  bytes += d.dirs * d.L * rows * (d.H + d.C) * kF32;  // states
  bytes += 2 * n * kI32 * d.dirs;                     // batches
  const int64_t extra = std::max<int64_t>(0, n - d.N);
  for (int64_t l = 0; l < d.L; ++l) {
    const int64_t outs = 1 + (c.model.skip_connections && l > 0 ? 1 : 0);
    bytes += d.dirs * extra * (4 * d.C + outs * d.H) * kF32;  // gates_, y, out grow
  }
  return bytes;
}

void add(std::vector<MemoryItem>& items, std::string name, int64_t bytes, std::string shrink,
         bool resident = false) {
  if (bytes > 0) items.push_back({std::move(name), bytes, std::move(shrink), resident});
}

const char* kVocabShrink = "a smaller vocabulary (data.max_vocab, data.min_count)";
const char* kActivationShrink = "train.batch_size, train.unroll_steps, model.cell_size";
const char* kLstmShrink = "model.cell_size, model.projection_dim, model.layers";

}  // namespace

int64_t table_bytes_per_rank(int64_t vocab, int64_t row_floats, int world_size, int64_t hot_rows,
                             bool adagrad) {
  // Full copies on every rank today (see the header): world_size and hot_rows do not matter yet.
  (void)world_size;
  (void)hot_rows;
  const int64_t values = vocab * row_floats * kF32;
  return adagrad ? 2 * values : values;
}

int64_t vocab_memory_bytes(int64_t words, int64_t token_bytes) {
  int64_t slots = 1;
  while (slots < 2 * words) slots *= 2;
  // std::string objects (32 bytes, heap beyond 15 characters: counted in full), the id table.
  return words * 32 + token_bytes + words + slots * kI32;
}

double flops_per_token(const ModelConfig& model, const SoftmaxConfig& softmax, int64_t vocab) {
  const double C = static_cast<double>(model.cell_size),
               P = static_cast<double>(model.projection_dim);
  const double H = static_cast<double>(model.output_dim()),
               E = static_cast<double>(model.input_dim());
  double per_direction = 0.0;
  for (int64_t l = 0; l < model.layers; ++l) {
    per_direction += 2.0 * (l == 0 ? E : H) * 4.0 * C;  // W_ih x_t
    per_direction += 2.0 * H * 4.0 * C;                 // W_hh h_{t-1}
    if (P > 0) per_direction += 2.0 * C * P;            // W_hr (o * tanh c)
  }
  per_direction += softmax.type == "sampled"
                       ? 2.0 * H * static_cast<double>(softmax.samples + 1)  // samples + true
                       : 2.0 * H * static_cast<double>(vocab);               // every class
  return 3.0 * (model.bidirectional ? 2.0 : 1.0) * per_direction;
}

int64_t TrainingPlan::host_bytes(bool to_allocate_only) const {
  int64_t total = 0;
  for (const MemoryItem& item : host)
    if (!to_allocate_only || !item.resident) total += item.bytes;
  return total;
}

int64_t TrainingPlan::device_bytes() const {
  int64_t total = 0;
  for (const MemoryItem& item : device) total += item.bytes;
  return total;
}

nlohmann::json TrainingPlan::to_json() const {
  nlohmann::json j;
  nlohmann::json counts = nlohmann::json::array();
  for (const auto& [name, count] : parameter_counts)
    counts.push_back({{"name", name}, {"count", count}});
  j["parameter_counts"] = counts;
  j["parameters"] = parameters;
  for (const auto& [label, items] :
       {std::pair<const char*, const std::vector<MemoryItem>*>{"host", &host},
        {"device", &device}}) {
    nlohmann::json list = nlohmann::json::array();
    for (const MemoryItem& item : *items)
      list.push_back({{"name", item.name},
                      {"bytes", item.bytes},
                      {"shrink", item.shrink},
                      {"resident", item.resident}});
    j[std::string(label) + "_items"] = list;
  }
  j["host_bytes"] = host_bytes();
  j["host_bytes_to_allocate"] = host_bytes(true);
  j["device_bytes"] = device_bytes();
  j["rows_per_rank"] = rows_per_rank;
  j["tokens_per_step"] = tokens_per_step;
  j["epoch_positions"] = epoch_positions;
  j["steps"] = steps;
  j["flops_per_token"] = flops_per_token;
  return j;
}

TrainingPlan plan_training(const PlanInputs& in) {
  ELMO_CHECK(in.config != nullptr && in.vocab > 0 && in.world_size >= 1,
             "plan_training: needs a config, a vocabulary size and a world size");
  const Config& c = *in.config;
  const Dims d = dims_of(in);
  const bool adagrad = c.optimizer.type == "adagrad";
  TrainingPlan plan;

  // Parameters per table and layer (BiLM registers the same).
  plan.parameter_counts.emplace_back("embedding.weight", d.V * d.E);
  int64_t dense = 0;
  for (int64_t dir = 0; dir < d.dirs; ++dir)
    for (int64_t l = 0; l < d.L; ++l) {
      plan.parameter_counts.emplace_back(str("lstm.", dir == 0 ? "fwd" : "bwd", ".", l),
                                         d.lstm_layer_params(l));
      dense += d.lstm_layer_params(l);
    }
  plan.parameter_counts.emplace_back("softmax.weight", d.V * d.H);
  plan.parameter_counts.emplace_back("softmax.bias", d.V);
  for (const auto& [name, count] : plan.parameter_counts) plan.parameters += count;

  plan.rows_per_rank = d.b;
  plan.tokens_per_step = c.train.batch_size * c.train.unroll_steps;
  plan.epoch_positions = in.train_tokens + in.train_sentences;
  plan.steps =
      c.train.max_steps > 0 ? c.train.max_steps
      : plan.epoch_positions > 0
          ? std::max<int64_t>(
                1, static_cast<int64_t>(std::ceil(c.train.epochs * plan.epoch_positions /
                                                  static_cast<double>(plan.tokens_per_step))))
          : 0;
  plan.flops_per_token = flops_per_token(c.model, c.softmax, d.V);

  // Where the model's tensors live: the device of a GPU run, else the host.
  std::vector<MemoryItem>& model_side = in.on_gpu ? plan.device : plan.host;
  const double slack = in.on_gpu ? kDeviceSlack : 1.0;  // host: slack pages are never touched
  const std::string V = std::to_string(d.V);
  add(model_side, str("parameters: embedding.weight [", V, " x ", d.E, "]"),
      table_bytes_per_rank(d.V, d.E, in.world_size, in.hot_rows, false), kVocabShrink);
  add(model_side, str("parameters: softmax.weight [", V, " x ", d.H, "] + bias"),
      table_bytes_per_rank(d.V, d.H + 1, in.world_size, in.hot_rows, false), kVocabShrink);
  add(model_side, str("parameters: LSTM (", d.dirs, " x ", d.L, " layers)"), dense * kF32,
      kLstmShrink);
  if (adagrad) {
    add(model_side, "optimizer: Adagrad accumulators of the embedding and softmax",
        table_bytes_per_rank(d.V, d.E + d.H + 1, in.world_size, in.hot_rows, true) -
            table_bytes_per_rank(d.V, d.E + d.H + 1, in.world_size, in.hot_rows, false),
        str(kVocabShrink, ", or optimizer.type = \"sgd\""));
    add(model_side, "optimizer: Adagrad accumulators of the LSTM", dense * kF32, kLstmShrink);
  }
  add(model_side, "gradients: LSTM (dense)", dense * kF32, kLstmShrink);
  const int64_t embedding_rows = std::min(d.V, d.dirs * d.N);
  add(model_side, str("gradients: embedding rows of a step (at most ", embedding_rows, ")"),
      embedding_rows * d.E * kF32 + (embedding_rows + 1 + d.dirs * d.N) * kI32,
      "train.batch_size, train.unroll_steps");
  if (d.S > 0) {
    const int64_t touched = std::min(d.V, d.S + d.dirs * d.N);
    add(model_side, str("gradients: softmax rows of a step (at most ", touched, ")"),
        static_cast<int64_t>(slack * static_cast<double>(touched * (d.H + 1) * kF32)),
        "softmax.samples, train.batch_size");
    add(model_side,
        str("sampled softmax: logits [", d.N, " x ", d.S, "], the samples' rows and gradients"),
        static_cast<int64_t>(slack * static_cast<double>(d.N * d.S * kF32)) + 2 * d.S * d.H * kF32 +
            d.S * (kF32 + 8 + kI32) + d.N * 2 * kF32 + d.V * (1 + kI32 + 1),
        "softmax.samples, train.batch_size, train.unroll_steps");
  } else {
    const int64_t chunk = std::min(kFullSoftmaxChunk, d.V);
    add(model_side, str("gradients: full softmax [", V, " x ", d.H, "] + bias"),
        d.V * (d.H + 1) * kF32, "softmax.type = \"sampled\"");
    add(model_side, str("full softmax: logits [", d.N, " x ", chunk, "] per direction"),
        d.dirs * (d.N * chunk * kF32 + d.N * (kF32 + 8 + kF32 + kF32)),
        "train.batch_size, train.unroll_steps");
  }
  int64_t activations = 0;
  for (int64_t l = 0; l < d.L; ++l) activations += lstm_layer_activations(d, l, c.model);
  activations = d.dirs * (activations + lstm_stack_buffers(d, c.model));
  add(model_side,
      str("activations: LSTM, kept for backward (", d.dirs, " x ", d.L, " layers of [", d.N,
          " x ...])"),
      activations, kActivationShrink);
  add(model_side, "activations: embedding outputs, softmax inputs and their gradients",
      d.dirs * d.N * ((2 * d.E + d.H) * kF32 + 2 * kI32), kActivationShrink);
  add(model_side, "carried LSTM state", d.dirs * d.L * d.b * (d.H + d.C) * kF32,
      "train.batch_size");
  if (in.validation)
    add(model_side,
        str("validation: full softmax over eval.batch_size x ",
            c.eval.mode == "stream" ? str(c.eval.unroll_steps, " steps")
                                    : str(kSentenceModeSteps, " positions (sentence mode)")),
        validation_bytes(d, c), "eval.batch_size, eval.unroll_steps");
  if (in.on_gpu)
    add(plan.device,
        str("cuBLAS workspaces (32 MiB x ", 1 + d.dirs + (in.world_size > 1), " streams)"),
        (1 + d.dirs + (in.world_size > 1 ? 1 : 0)) * kCublasWorkspace, "");

  // The host side of every run.
  std::vector<MemoryItem>& host = plan.host;
  const int64_t ahead = in.world_size > 1 ? 2 : 1;  // a rank draws the next batch one step ahead
  add(host, "batches (ids, per direction)",
      ahead * d.dirs * d.N * 2 * kI32 + c.train.batch_size * 4 * 8, "train.batch_size");
  if (in.world_size > 1) {
    const int64_t hot = std::min(in.hot_rows, d.V);
    add(host, "data parallel: all-reduce bucket (LSTM gradients + hot rows) and row scratch",
        (dense + hot * (d.E + d.H + 1)) * kF32 + d.V, "dist.hot_rows");
    if (in.on_gpu)
      add(host, "data parallel: host copies of the tables the row exchange serves",
          d.V * (d.E + d.H + 1) * kF32, kVocabShrink);
  }
  if (in.on_gpu)
    add(host, "checkpoint staging (the largest tensor, copied from the device)",
        d.V * std::max(d.E, d.H) * kF32, kVocabShrink);
  add(host, "token cache (memory-mapped corpus ids)", in.token_cache_bytes,
      "a smaller corpus per run", true);
  add(host, "vocabulary", in.vocab_bytes, kVocabShrink, true);
  add(host, "process (code, libraries; measured before the data)", in.process_bytes, "", true);
  return plan;
}

void check_memory_fits(const TrainingPlan& plan, int processes_on_host,
                       const HostMemoryAvailable& host, int64_t device_free,
                       const std::string& device_name) {
  const auto largest = [](const std::vector<MemoryItem>& items) {
    std::vector<const MemoryItem*> sorted;
    for (const MemoryItem& item : items)
      if (!item.resident) sorted.push_back(&item);
    std::sort(sorted.begin(), sorted.end(),
              [](const MemoryItem* a, const MemoryItem* b) { return a->bytes > b->bytes; });
    std::string out;
    for (size_t i = 0; i < std::min<size_t>(3, sorted.size()); ++i)
      out += str(i ? "; " : "", sorted[i]->name, " ", format_bytes(sorted[i]->bytes),
                 sorted[i]->shrink.empty() ? "" : str(" (", sorted[i]->shrink, ")"));
    return out;
  };
  const char* advice =
      "; make those smaller, see the whole plan with `elmo_fast plan --config ...`, or pass "
      "--skip-memory-check to try anyway";
  const int64_t host_need = plan.host_bytes(true) * std::max(1, processes_on_host);
  if (host.bytes >= 0 && host_need > host.bytes)
    throw UsageError(
        str("this configuration needs about ", format_bytes(host_need), " of host memory",
            processes_on_host > 1 ? str(" (", processes_on_host, " processes on this machine)")
                                  : std::string(),
            " but ", format_bytes(host.bytes), " are available (", host.source,
            "): the largest items per process are ", largest(plan.host), advice));
  if (device_free >= 0 && plan.device_bytes() > device_free)
    throw UsageError(str("this configuration needs about ", format_bytes(plan.device_bytes()),
                         " on ", device_name, " but ", format_bytes(device_free),
                         " are free (cudaMemGetInfo): the largest items are ", largest(plan.device),
                         advice));
}

}  // namespace elmo
