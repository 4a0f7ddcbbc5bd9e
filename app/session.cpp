#include "app/session.h"

#include <filesystem>

#include "io/atomic_file.h"
#include "io/checkpoint.h"
#include "io/corpus.h"
#include "runtime/host_memory.h"
#include "runtime/log.h"

namespace elmo {

namespace fs = std::filesystem;

DataFiles resolve_data_files(const Config& config) {
  DataFiles files;
  if (config.data.corpus == kBuiltinSynthetic) {
    SyntheticFiles generated = ensure_synthetic_corpus(config.synthetic, config.run.dir + "/data");
    files.train = generated.train;
    files.valid = config.data.valid.empty() ? generated.valid : config.data.valid;
    files.synthetic.emplace(config.synthetic);
  } else {
    files.train = config.data.corpus;
    files.valid = config.data.valid;
  }
  files.test = config.data.test;
  return files;
}

Vocab prepare_vocab(const Config& config, const DataFiles& files, bool rebuild) {
  fs::create_directories(config.run.dir);
  const std::string run_vocab = config.run.dir + "/vocab.txt";
  Vocab vocab;
  if (!config.data.vocab.empty()) {
    vocab = Vocab::load(config.data.vocab);
  } else if (!rebuild && fs::exists(run_vocab)) {
    vocab = Vocab::load(run_vocab);
  } else {
    log_info("building the vocabulary of ", files.train, " (min_count ", config.data.min_count,
             ")");
    vocab = build_vocab(resolve_corpus(files.train), config.data.min_count, config.data.max_vocab);
    log_info("vocabulary: ", vocab.size(), " tokens");
  }
  if (!fs::exists(run_vocab) || Vocab::load(run_vocab).hash() != vocab.hash()) vocab.save(run_vocab);
  return vocab;
}

std::string cache_dir(const Config& config) {
  return config.data.cache_dir.empty() ? config.run.dir + "/cache" : config.data.cache_dir;
}

BilmShape bilm_shape(const Config& config, int64_t vocab_size) {
  BilmShape shape;
  shape.vocab = vocab_size;
  shape.embedding_dim = config.model.input_dim();
  shape.cell_size = config.model.cell_size;
  shape.proj_dim = config.model.projection_dim;
  shape.layers = config.model.layers;
  shape.cell_clip = static_cast<float>(config.model.cell_clip);
  shape.proj_clip = static_cast<float>(config.model.proj_clip);
  shape.skip_connections = config.model.skip_connections;
  shape.bidirectional = config.model.bidirectional;
  return shape;
}

BilmTrainOptions bilm_options(const Config& config) {
  BilmTrainOptions options;
  options.softmax = config.softmax.type == "full" ? SoftmaxKind::kFull : SoftmaxKind::kSampled;
  options.samples = config.softmax.samples;
  options.dropout = static_cast<float>(config.model.dropout);
  options.seed = static_cast<uint64_t>(config.run.seed);
  // CUDA GEMMs only; a CPU model computes f32 whatever this says (the trainer refuses or warns
  // about tf32/bf16 on the CPU, see train.cpp check_precision_request).
  options.precision = parse_gemm_precision(config.train.precision);
  options.lstm_kernel = parse_lstm_kernel(config.train.lstm_kernel);
  return options;
}

BilmInit bilm_init(const Config& config) {
  BilmInit init;
  init.init_scale = static_cast<float>(config.model.init_scale);
  init.embedding_scale = static_cast<float>(config.model.embedding_init_scale);
  init.forget_bias = static_cast<float>(config.model.forget_bias);
  init.uniform_softmax_bias = config.model.softmax_bias_init == "uniform";
  return init;
}

OptimizerOptions optimizer_options(const Config& config) {
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

NamedTensors model_tensors(const BiLM& model) {
  NamedTensors out;
  for (const Parameter* p : model.params().all()) out.emplace_back(p->name, p->value);
  return out;
}

void load_model_tensors(BiLM& model, const NamedTensors& tensors, const std::string& origin) {
  for (Parameter* p : model.params().all()) {
    const Tensor* found = nullptr;
    for (const auto& [name, tensor] : tensors)
      if (name == p->name) found = &tensor;
    if (found == nullptr)
      throw Error(str(origin, ": parameter '", p->name, "' is missing"));
    // A table stored in a sharded layout (a rank's own rows) takes its home rows of the whole.
    const RowLayout* layout = model.table_layout(p->name);
    if (layout && layout->is_sharded()) {
      // The whole table, or just the home rows (a rank's share of a checkpoint).
      const int64_t rows = found->ndim() > 0 ? found->size(0) : 0;
      if (found->dtype() != DType::kF32 || found->ndim() != p->value.ndim() ||
          (rows != layout->vocab && rows != layout->home()) || rows == 0 ||
          found->numel() / rows != p->row_dim())
        throw Error(str(origin, ": parameter '", p->name, "' is ", found->describe(),
                        " but the model needs f32 with ", layout->vocab, " rows of ",
                        p->row_dim()));
      p->value.rows(0, layout->home()).copy_from(take_home_rows(*layout, *found));
      continue;
    }
    if (!(found->shape() == p->value.shape()) || found->dtype() != DType::kF32)
      throw Error(str(origin, ": parameter '", p->name, "' is ", found->describe(),
                      " but the model needs f32", p->value.shape().str()));
    p->value.copy_from(*found);
  }
}

std::string run_dir_of(const std::string& path) {
  fs::path p = fs::path(path).lexically_normal();
  if (p.has_filename() == false) p = p.parent_path();
  if (fs::is_directory(p / "checkpoints")) return p.string();
  if (p.filename() == "checkpoints") return p.parent_path().string();
  if (p.filename().string().rfind("step-", 0) == 0) return p.parent_path().parent_path().string();
  // Any other folder inside checkpoints/ (checkpoints/best).
  if (p.parent_path().filename() == "checkpoints") return p.parent_path().parent_path().string();
  return p.string();
}

namespace {
// A checkpoint written by several ranks (sharded tables) is assembled whole on this process:
// refuse, before reading it, one whose files are more than this machine can allocate.
void check_whole_checkpoint_fits(const std::string& checkpoint_or_run_dir) {
  std::string dir = checkpoint_or_run_dir;
  if (!fs::exists(fs::path(dir) / "state.json")) {
    const std::optional<std::string> latest = find_latest_checkpoint(dir);
    if (!latest) return;  // load_checkpoint says what is missing
    dir = *latest;
  }
  nlohmann::json state;
  try {
    state = nlohmann::json::parse(read_file((fs::path(dir) / "state.json").string()));
  } catch (const std::exception&) {
    return;  // load_checkpoint reports a damaged state.json
  }
  if (!state.is_object() || !state.contains("shards")) return;
  int64_t bytes = 0;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec))
    if (entry.path().extension() == ".safetensors") bytes += entry.file_size(ec);
  const HostMemoryAvailable available = host_memory_available();
  if (available.bytes < 0 || bytes <= available.bytes) return;
  const int64_t world = state.value("world_size", int64_t{0});
  throw UsageError(str(
      dir, " was written by ", world, " ranks, each holding its rows of the tables; assembled "
      "whole on this one process it needs ", format_bytes(bytes), ", and this machine has ",
      format_bytes(available.bytes), " available (", available.source, "). Evaluate it "
      "distributed instead, where each rank scores its own rows: resume the run with no step "
      "left to train, e.g. `elmo_fast --config CONFIG --resume --nodes 1 --workers_per_node ",
      world, " --set run.dir=", run_dir_of(dir), " --set data.test=FILE` (its final evaluation "
      "reports the test perplexity); `embed` and `export-bilm` need a machine with that "
      "memory"));
}
}  // namespace

LoadedModel load_model(const std::string& checkpoint_or_run_dir) {
  check_whole_checkpoint_fits(checkpoint_or_run_dir);
  LoadedModel loaded;
  try {
    loaded.checkpoint = load_checkpoint(checkpoint_or_run_dir);
  } catch (const CheckpointChecksumError& e) {
    if (e.fallback().empty()) throw;
    throw Error(str(e.what(), " (use it with --checkpoint ", e.fallback(), ")"));
  }
  const nlohmann::json& state = loaded.checkpoint.state;
  if (!state.contains("config") || !state["config"].is_string() || !state.contains("vocab_size"))
    throw Error(str(checkpoint_or_run_dir, ": checkpoint state.json lacks the model config"));
  loaded.config = config_from_string(state["config"].get<std::string>(), "checkpoint config");
  loaded.run_dir = run_dir_of(checkpoint_or_run_dir);
  const int64_t vocab_size = state["vocab_size"].get<int64_t>();
  loaded.model = std::make_unique<BiLM>(bilm_shape(loaded.config, vocab_size),
                                        bilm_options(loaded.config));
  const NamedTensors* tensors = loaded.checkpoint.file("model");
  if (tensors == nullptr) throw Error(str(checkpoint_or_run_dir, ": no model.safetensors"));
  load_model_tensors(*loaded.model, *tensors, checkpoint_or_run_dir);
  return loaded;
}

Vocab load_model_vocab(const LoadedModel& loaded, const std::string& override_path) {
  const std::string path = override_path.empty() ? loaded.run_dir + "/vocab.txt" : override_path;
  if (!fs::exists(path))
    throw UsageError(str("no vocabulary at '", path, "': pass --vocab FILE"));
  Vocab vocab = Vocab::load(path);
  const int64_t rows = loaded.model->shape().vocab;
  if (vocab.size() != rows)
    throw Error(str("vocabulary '", path, "' has ", vocab.size(), " tokens but the model's ",
                    "embedding has ", rows, " rows: pass the vocabulary it was trained with"));
  return vocab;
}

}  // namespace elmo
