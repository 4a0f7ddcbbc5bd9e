// `train --init-from`: a new run (step 0, its own data, vocabulary and optimizer) that starts
// from the weights of an earlier model instead of a random initialisation: fine-tuning a
// pretrained biLM on a domain corpus.
//
// Sources: an elmo_fast checkpoint (a step folder, a checkpoints folder or a run folder; its
// vocabulary is run_dir/vocab.txt unless --init-vocab names another), or a bilm-tf/allennlp
// HDF5 (lm_weights.hdf5 with the LSTM weights and, when present, "embedding" and "softmax/{W,b}";
// --init-vocab is then the vocabulary of those tables' rows).
//
// What is copied: every LSTM weight as it is (the model sizes must match: each mismatch is named
// in one UsageError with the --set that fixes it); of the embedding and softmax tables (weight and
// bias) the rows of the words present in both vocabularies, found by token string. Rows of new
// words keep the values the run's own initialisation gave them (the same a fresh run has), rows
// of words the new vocabulary lacks are dropped. A table the source lacks (an HDF5 without
// "embedding" or "softmax/*", a checkpoint imported without them: state.json
// "tables_not_imported") keeps its fresh initialisation, and the log says so.
// The optimizer starts fresh, unless keep_optimizer (--init-optimizer): then the Adagrad
// accumulators of the dense parameters and of the matched table rows come from the source
// checkpoint too (new rows start at optimizer.initial_accumulator).
//
// What it is not: --resume (which continues a run: same data position, step and vocabulary).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "io/config.h"
#include "io/safetensors.h"
#include "io/token_cache.h"
#include "io/vocab.h"
#include "model/bilm.h"
#include "model/optimizer.h"

namespace elmo {

struct InitSourceArgs {
  std::string path;             // --init-from: checkpoint/run folder or .hdf5/.h5 file
  std::string vocab;            // --init-vocab ("" = the checkpoint's run_dir/vocab.txt)
  bool keep_optimizer = false;  // --init-optimizer
};

// Checks the flags alone (before anything is loaded or any process started): UsageError for
// --init-vocab or --init-optimizer without --init-from, --init-from with --resume, a path or an
// --init-vocab file that does not exist, --init-optimizer with an HDF5 source.
void check_init_args(const InitSourceArgs& args, bool resume);

// The model sizes of a source, for the comparison with the config.
struct SourceSizes {
  int64_t embedding_dim = 0, cell_size = 0, projection_dim = 0, layers = 0;
  bool bidirectional = true;
};

// What a source holds, read into host memory.
struct InitSource {
  std::string origin;  // the path, for messages
  bool is_hdf5 = false;
  SourceSizes sizes;
  NamedTensors model;      // parameters by name (tables only when the source has them)
  NamedTensors optimizer;  // "<param>.adagrad_acc" (checkpoints only)
  Vocab vocab;             // rows of the tables (empty when the source has no table)
  std::vector<std::string> absent_tables;  // table parameters the source does not hold
  // Checkpoint sources: what the weights were trained with, compared with the config (warned).
  std::optional<Config> config;
};

// Reads `args.path`. UsageError for a missing or mismatched vocabulary (an HDF5 with tables but
// no --init-vocab; a vocabulary whose size is not the tables' rows) or --init-optimizer on a
// checkpoint without Adagrad state; Error for unreadable files.
InitSource load_init_source(const InitSourceArgs& args);

// UsageError naming every size in which `source` and the config's model differ, with the
// --set overrides that would match the source; warnings for settings that change the
// function but not the shapes (clips, skip connections).
void check_sizes_match(const InitSource& source, const Config& config);

struct InitReport {
  int64_t matched = 0, added = 0, dropped = 0;  // vocabulary rows
  double matched_token_share = 0.0;             // of the training tokens (words)
  bool optimizer_kept = false;
  std::vector<std::string> fresh_tables;  // tables initialised fresh (absent in source)
  nlohmann::json to_json(const std::string& origin) const;
};

// For every id of `to`, the id of the same token in `from`, or -1.
std::vector<int32_t> map_vocab_rows(const Vocab& from, const Vocab& to);

// Copies the source into `model` (already initialised as a fresh run) and, when
// args.keep_optimizer, its accumulators into `optimizer`; counts what matched. `train_data`
// (the run's training tokens) gives the token share.
InitReport apply_init_source(const InitSource& source, const Vocab& vocab, BiLM& model,
                             Optimizer& optimizer, bool keep_optimizer,
                             const TokenCache& train_data);

}  // namespace elmo
