// Shared plumbing of the subcommands: turning a Config into data (corpus files, vocabulary,
// token cache) and into a model, and saving/loading the model with its checkpoint metadata.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "io/checkpoint.h"
#include "io/config.h"
#include "io/synthetic_corpus.h"
#include "io/token_cache.h"
#include "io/vocab.h"
#include "model/bilm.h"
#include "model/optimizer.h"

namespace elmo {

inline constexpr const char* kBuiltinSynthetic = "builtin:synthetic";

// Where the run's data lives after set-up.
struct DataFiles {
  std::string train, valid, test;  // corpus specs ("" = none)
  std::optional<SyntheticLanguage> synthetic;  // builtin corpus only
};

// Generates the builtin corpus under run.dir/data when configured; resolves the other specs.
DataFiles resolve_data_files(const Config& config);

// The vocabulary of a run: data.vocab when set, else run.dir/vocab.txt (built from the training
// corpus when missing or when `rebuild`). The vocab used is always copied to run.dir/vocab.txt.
Vocab prepare_vocab(const Config& config, const DataFiles& files, bool rebuild);

std::string cache_dir(const Config& config);

BilmShape bilm_shape(const Config& config, int64_t vocab_size);
BilmTrainOptions bilm_options(const Config& config);
BilmInit bilm_init(const Config& config);  // model.init_scale, forget_bias, ...
OptimizerOptions optimizer_options(const Config& config);  // the [optimizer] section

// A model restored from a checkpoint (or run folder) with the config it was trained with.
struct LoadedModel {
  Config config;
  std::unique_ptr<BiLM> model;
  CheckpointData checkpoint;
  std::string run_dir;  // folder holding checkpoints/ and vocab.txt
};
LoadedModel load_model(const std::string& checkpoint_or_run_dir);

// The run folder of a run folder, its checkpoints/ folder or a folder in it (step-N/, best/).
std::string run_dir_of(const std::string& path);

// The vocabulary saved beside a checkpoint (run_dir/vocab.txt), or `override_path`; checks that
// its size matches the model's embedding rows.
Vocab load_model_vocab(const LoadedModel& loaded, const std::string& override_path);

// Model tensors by name (CPU), in registry order.
NamedTensors model_tensors(const BiLM& model);
// Copies named tensors into the model; every model parameter must be present with its shape.
void load_model_tensors(BiLM& model, const NamedTensors& tensors, const std::string& origin);

}  // namespace elmo
