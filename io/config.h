// The run configuration: one TOML file (run.toml by default) plus `--set section.key=value`
// overrides, parsed with toml++ into a plain `Config` struct and validated key by key.
//
// Every key lives in one table (config.cpp, kKeys): section, name, type, default, allowed range
// and a one-line doc. That table drives parsing, validation, the canonical dump, and the
// README's config reference (config_reference_markdown()), so they cannot drift apart.
//
// Errors are UsageError with the origin of the offending value:
//   "run.toml:12:5: <toml parse error>"                                  (malformed TOML)
//   "run.toml:7: unknown key 'model.cell_sise' (did you mean 'model.cell_size'?)"
//   "run.toml:9: 'train.batch_size' must be an integer, got string"
//   "run.toml:9: 'train.batch_size' = -4 is out of range (1 .. 1048576)"
//   "--set train.batch_size=x: 'train.batch_size' must be an integer, got string"
//
// Paths in the config are kept as written; relative paths are relative to the working
// directory (not to the config file), so configs/*.toml are meant to be run from the repo root.
// A bad value in the file is forgiven when a --set override of the same key replaces it.
//
// What it is not: it knows nothing about vocab files or corpora. Checks that need the vocab
// size (softmax.samples < V) belong to the trainer.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace elmo {

struct RunConfig {
  std::string dir = "runs/default";  // checkpoints, metrics, vocab, token cache
  int64_t seed = 1234;
  bool operator==(const RunConfig&) const = default;
};

struct DataConfig {
  std::string corpus = "builtin:synthetic";  // builtin:synthetic | file | directory | glob
  std::string valid;                         // "" = none (builtin: the generator's held-out text)
  std::string test;                          // "" = none
  std::string vocab;                         // "" = build into run.dir/vocab.txt
  int64_t min_count = 1;
  int64_t max_vocab = 0;  // 0 = no limit
  std::string cache_dir;  // "" = run.dir/cache
  bool shuffle = true;
  std::string packing = "sentences";  // sentences (bilm-tf) | contiguous (TF PTB tutorial)
  bool operator==(const DataConfig&) const = default;
};

// The built-in Zipfian Markov language (io/synthetic_corpus.h documents the generator).
struct SyntheticConfig {
  int64_t vocab_size = 2000;  // words, without <S> </S> <UNK>
  int64_t classes = 16;
  double zipf_exponent = 1.2;
  double mean_sentence_length = 16.0;
  int64_t train_sentences = 200000;
  int64_t valid_sentences = 5000;
  int64_t seed = 7;
  bool operator==(const SyntheticConfig&) const = default;
};

struct ModelConfig {
  int64_t embedding_dim = 0;  // 0 = output_dim()
  int64_t cell_size = 512;
  int64_t projection_dim = 128;  // 0 = no projection
  int64_t layers = 2;
  double cell_clip = 3.0;  // 0 = off
  double proj_clip = 3.0;  // 0 = off
  bool skip_connections = true;
  double dropout = 0.1;
  bool bidirectional = true;
  double init_scale = 0.05;
  double embedding_init_scale = 1.0;
  double forget_bias = 1.0;                // the forget gate's starting bias
  std::string softmax_bias_init = "zero";  // zero | uniform (+-init_scale)

  // Width of each layer's output (h): the projection when on, else the cell.
  int64_t output_dim() const { return projection_dim > 0 ? projection_dim : cell_size; }
  // Width of the embedding E (the first layer's input).
  int64_t input_dim() const { return embedding_dim > 0 ? embedding_dim : output_dim(); }
  bool operator==(const ModelConfig&) const = default;
};

struct SoftmaxConfig {
  std::string type = "sampled";  // sampled | full
  int64_t samples = 8192;
  bool operator==(const SoftmaxConfig&) const = default;
};

struct TrainConfig {
  int64_t batch_size = 128;
  int64_t unroll_steps = 20;
  double epochs = 1.0;
  int64_t max_steps = 0;        // 0 = from epochs
  int64_t threads = 0;          // 0 = all cores
  std::string device = "auto";  // auto | cpu | cuda | cuda:N
  std::string precision = "fp32";  // fp32 | tf32 | bf16: CUDA GEMMs (runtime/gemm.h); CPU: fp32
  std::string lstm_kernel = "auto";  // auto | standard | persistent (model/lstm_layer.h)
  int64_t log_every = 10;
  int64_t eval_every = 0;  // 0 = only at the end
  bool deterministic = true;
  // Stop after this many validations in a row without improving the best perplexity by more
  // than early_stopping_min_delta (0 = never stop early; app/validation_tracker.h).
  int64_t early_stopping_patience = 0;
  double early_stopping_min_delta = 0.0;  // perplexity points
  // Steps whose loss or gradient norm is not finite are skipped; after this many in a row the
  // run goes back to its last checkpoint with the learning rate times bad_step_lr_scale, at most
  // max_bad_step_reloads times (app/train.cpp, docs/FAULTS.md).
  int64_t max_bad_steps = 3;
  double bad_step_lr_scale = 0.5;
  int64_t max_bad_step_reloads = 3;
  bool operator==(const TrainConfig&) const = default;
};

struct OptimizerConfig {
  std::string type = "adagrad";  // adagrad | sgd
  double learning_rate = 0.2;
  double initial_accumulator = 1.0;
  double epsilon = 1e-7;
  double clip_norm = 10.0;  // 0 = off
  double lr_decay = 1.0;
  int64_t decay_after_epochs = 0;
  bool operator==(const OptimizerConfig&) const = default;
};

struct CheckpointConfig {
  int64_t every_steps = 1000;  // 0 = off
  int64_t keep_last = 3;       // 0 = keep all
  double every_minutes = 0.0;  // 0 = off
  bool keep_best = false;      // checkpoints/best: the best validation perplexity so far
  std::string on_write_error = "stop";  // stop | warn: a checkpoint that cannot be written
  bool operator==(const CheckpointConfig&) const = default;
};

struct EvalConfig {
  std::string mode = "stream";  // stream | sentence
  int64_t batch_size = 1;
  int64_t unroll_steps = 20;
  int64_t max_tokens = 0;  // 0 = all
  int64_t head_ids = 0;    // slices (app/eval_slices.h): 0 = the most frequent 1% of the ids
  int64_t torso_ids = 0;   // 0 = the most frequent 10% of the ids
  bool operator==(const EvalConfig&) const = default;
};

struct MetricsConfig {
  bool jsonl = true;
  bool tensorboard = true;
  bool operator==(const MetricsConfig&) const = default;
};

// Distributed runs (DESIGN.md §6); ignored by a single process.
struct DistConfig {
  int64_t hot_rows = -1;       // -1 = the smallest id prefix covering hot_coverage of tokens
  double hot_coverage = 0.9;   // share of training-token occurrences the hot head covers
  double timeout_seconds = 120.0;  // rendezvous, collectives and row exchange waits
  std::string allreduce_precision = "fp32";  // LSTM gradients on GPU ranks: "fp32" | "bf16"
  std::string overlap_allreduce = "auto";    // auto | on | off (app/data_parallel.h DenseSync)
  bool operator==(const DistConfig&) const = default;
};

struct Config {
  RunConfig run;
  DataConfig data;
  SyntheticConfig synthetic;
  ModelConfig model;
  SoftmaxConfig softmax;
  TrainConfig train;
  OptimizerConfig optimizer;
  CheckpointConfig checkpoint;
  EvalConfig eval;
  MetricsConfig metrics;
  DistConfig dist;
  bool operator==(const Config&) const = default;
};

// Reads `path` (must exist), then applies `overrides` ("section.key=value", from --set) in
// order, then runs the cross-key checks. UsageError on any problem (see the header comment).
Config load_config(const std::string& path, const std::vector<std::string>& overrides = {});

// Same from text; `origin_name` stands in for the file name in messages.
Config config_from_string(const std::string& text, const std::string& origin_name = "config",
                          const std::vector<std::string>& overrides = {});

// Applies one "section.key=value" override to an already valid config (value parsed as TOML;
// a bare word is taken as a string). UsageError naming `--set` when the key or value is bad.
// Does not run the cross-key checks; call validate_config afterwards.
void apply_override(Config& config, const std::string& assignment);

// Cross-key checks (enum values are checked per key). UsageError naming the keys.
void validate_config(const Config& config);

// Canonical TOML: every section in table order, every key, values in a fixed spelling
// (floats round-trip exactly). config_from_string(config_to_toml(c)) == c. With comments,
// each key is preceded by its doc line (for files meant to be read by people).
std::string config_to_toml(const Config& config, bool with_comments = false);

// FNV-1a 64 of config_to_toml(config): the checkpoint's config hash.
uint64_t config_hash(const Config& config);

// Hash of what decides parameter shapes: the resolved embedding width, cell size,
// projection, layers and bidirectional, plus `vocab_size` when > 0 (the vocab size comes from
// the vocab file, not the config, so the caller passes it). Two configs with the same hash can
// load each other's model.safetensors.
uint64_t model_shape_hash(const Config& config, int64_t vocab_size = 0);

uint64_t fnv1a64(const std::string& bytes);

// One row of the key table.
struct ConfigKeyInfo {
  std::string key;            // "model.cell_size"
  std::string type;           // "integer" | "float" | "boolean" | "string"
  std::string default_value;  // as TOML: 512, 0.1, true, "stream"
  std::string range;          // "1 .. 65536", "[0, 1)", "stream | sentence", "" when free
  std::string doc;            // one line
};

std::vector<ConfigKeyInfo> describe_keys();  // every key, in table order
std::vector<std::string> config_sections();  // "run", "data", ... in table order
// A Markdown table (Key | Type | Default | Range | Meaning) for README.md.
std::string config_reference_markdown();

}  // namespace elmo
