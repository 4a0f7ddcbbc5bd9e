// The arithmetic of a training run before it starts: parameter counts per table and layer, the
// bytes one process (rank) holds on the host and on its device, FLOPs per token, steps. Used by
// `elmo_fast plan` (with a short timed probe, app/plan_command.cpp) and by `train`, which
// refuses a configuration that cannot fit before it allocates anything big.
//
// The byte counts follow what the code allocates (each item names the buffers it stands for):
// parameters, Adagrad accumulators, the dense LSTM gradients and the touched table rows, the
// activations the LSTM layers keep for backward (model/lstm_layer.h LstmLayerWorkspace,
// model/lstm_stack.h), the embedding and softmax buffers, the sampled softmax's [B x T, S]
// logits or the full softmax's [B x T, 4096] chunks and [V, H] gradient, the validation's
// buffers, the batches (a distributed rank draws one step ahead), the token cache as it is
// mapped, the vocabulary, and what the process held before (code, libraries: measured by the
// caller). Upper bounds where the data decides (touched rows: at most min(V, rows of the
// step)). tests/app/test_training_plan.cpp checks the host total against the peak resident
// memory of real CPU training runs where the model dominates (within 15%).
//
// What it is not: an allocator, or a measurement (the probe is).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "io/config.h"
#include "runtime/host_memory.h"

namespace elmo {

struct PlanInputs {
  const Config* config = nullptr;
  int64_t vocab = 0;
  int world_size = 1;
  int64_t hot_rows = 0;    // distributed: ids below this are replicated (dist.hot_rows resolved)
  bool on_gpu = false;     // the model trains on a CUDA device
  bool validation = true;  // the run evaluates held-out text (during or after training)
  // Training corpus per epoch (0 = unknown: steps then come from train.max_steps only).
  int64_t train_tokens = 0, train_sentences = 0;
  int64_t token_cache_bytes = 0;  // mapped token files (training + validation)
  int64_t vocab_bytes = 0;        // the Vocab in memory (vocab_memory_bytes)
  int64_t process_bytes = 0;      // resident before data and model (code, libraries; measured)
};

struct MemoryItem {
  std::string name;  // what it is, with its shape
  int64_t bytes = 0;
  std::string shrink;     // the settings that make it smaller
  bool resident = false;  // already in memory when training checks (process, data)
};

struct TrainingPlan {
  std::vector<std::pair<std::string, int64_t>> parameter_counts;  // per table and layer
  int64_t parameters = 0;
  std::vector<MemoryItem> host, device;  // per process (rank)
  int64_t rows_per_rank = 0;             // the largest rank's share of train.batch_size
  int64_t tokens_per_step = 0;           // over all ranks: batch_size x unroll_steps
  int64_t epoch_positions = 0;           // predictions per epoch (tokens + sentences; 0 unknown)
  int64_t steps = 0;                     // of the run (0 unknown)
  double flops_per_token = 0.0;

  int64_t host_bytes(bool to_allocate_only = false) const;
  int64_t device_bytes() const;
  nlohmann::json to_json() const;
};

TrainingPlan plan_training(const PlanInputs& inputs);

// Training FLOPs per input position (both directions): 3 x the forward GEMM FLOPs, per layer and
// direction 2 * in * 4C (input), 2 * H * 4C (recurrent) and 2 * C * P (projection), plus the
// softmax logits 2 * H * (S + 1) sampled or 2 * H * V full. The same model as
// bench/bench_train_gpu.py's flops_per_token (503.3 MFLOP at bilm-tf sizes; the test
// TrainingPlan.FlopsMatchTheBenchmarksModel runs that function on every config in configs/).
double flops_per_token(const ModelConfig& model, const SoftmaxConfig& softmax, int64_t vocab);

// Bytes one rank holds of a row-sparse table [vocab, row_floats] (values, plus the Adagrad
// accumulator when `adagrad`), as model/row_layout.h stores it: a process alone every row; a
// rank of world_size > 1 the hot head, its share of the tail (rank 0's, the largest:
// ceil((vocab - hot) / world)) and a step cache of at most cache_rows fetched rows (values
// only: the accumulators cover hot and owned rows). docs/ARCHITECTURE.md "Sharded storage".
int64_t table_bytes_per_rank(int64_t vocab, int64_t row_floats, int world_size, int64_t hot_rows,
                             bool adagrad, int64_t cache_rows = 0);

// What a Vocab of `words` entries whose token bytes sum to `token_bytes` holds in memory.
int64_t vocab_memory_bytes(int64_t words, int64_t token_bytes);

// UsageError when the bytes a process still has to allocate (x processes_on_host on this
// machine) exceed what the host has available, or a device's share exceeds device_free
// (-1: no device): naming the need, what is available and where that number comes from, the
// largest items with the settings that shrink them, `elmo_fast plan` and --skip-memory-check.
void check_memory_fits(const TrainingPlan& plan, int processes_on_host,
                       const HostMemoryAvailable& host, int64_t device_free,
                       const std::string& device_name);

}  // namespace elmo
