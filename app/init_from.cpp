// `train --init-from`: see init_from.h.
#include "app/init_from.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <functional>

#include "app/session.h"
#include "io/bilm_hdf5.h"
#include "io/checkpoint.h"
#include "model/embedding.h"
#include "runtime/log.h"

namespace elmo {

namespace fs = std::filesystem;

namespace {

constexpr const char* kTables[] = {kEmbeddingWeight, "softmax.weight", "softmax.bias"};
constexpr const char* kAccumulatorSuffix = ".adagrad_acc";

bool is_table(const std::string& name) {
  for (const char* t : kTables)
    if (name == t) return true;
  return false;
}

const Tensor* find(const NamedTensors& tensors, const std::string& name) {
  for (const auto& [n, t] : tensors)
    if (n == name) return &t;
  return nullptr;
}

// Runs `edit` on a host view of `t` (the tensor itself on the CPU, a copy written back on a GPU).
void edit_on_host(Tensor& t, const std::function<void(Tensor&)>& edit) {
  if (t.device().is_cpu()) return edit(t);
  Tensor host = t.to(Device::cpu());
  edit(host);
  t.copy_from(host);
}

// Rows of `dst` [V_new, ...] whose token the source has take the source's row of `src`.
void copy_matched_rows(const Tensor& src, Tensor& dst, const std::vector<int32_t>& rows,
                       const std::string& what) {
  const int64_t width = dst.numel() / dst.size(0);
  ELMO_REQUIRE(
      src.dtype() == DType::kF32 && src.numel() / std::max<int64_t>(src.size(0), 1) == width, what,
      " is ", src.describe(), " but the model's rows are ", width, " wide");
  const Tensor host_src = src.to(Device::cpu());
  edit_on_host(dst, [&](Tensor& host) {
    for (size_t i = 0; i < rows.size(); ++i) {
      if (rows[i] < 0) continue;
      std::copy_n(host_src.data<float>() + rows[i] * width, width,
                  host.data<float>() + static_cast<int64_t>(i) * width);
    }
  });
}

Vocab load_vocab_file(const std::string& path, const std::string& what) {
  if (!fs::exists(path))
    throw UsageError(str("no vocabulary at '", path, "' for ", what,
                         ": pass the vocabulary of its rows with --init-vocab FILE"));
  return Vocab::load(path);
}

InitSource load_checkpoint_source(const InitSourceArgs& args) {
  InitSource source;
  source.origin = args.path;
  CheckpointData ckpt = load_checkpoint(args.path);
  const nlohmann::json& state = ckpt.state;
  if (!state.contains("config") || !state["config"].is_string() || !state.contains("vocab_size"))
    throw Error(str(args.path, ": checkpoint state.json lacks the model config"));
  source.config = config_from_string(state["config"].get<std::string>(), "checkpoint config");
  const ModelConfig& m = source.config->model;
  source.sizes = {m.input_dim(), m.cell_size, m.projection_dim, m.layers, m.bidirectional};
  const NamedTensors* model = ckpt.file("model");
  if (model == nullptr) throw Error(str(args.path, ": checkpoint has no model.safetensors"));
  std::vector<std::string> not_imported;
  if (state.contains("tables_not_imported"))
    for (const auto& name : state["tables_not_imported"]) not_imported.push_back(name);
  for (const auto& [name, tensor] : *model) {
    if (std::find(not_imported.begin(), not_imported.end(), name) == not_imported.end())
      source.model.emplace_back(name, tensor);
  }
  for (const char* t : kTables)
    if (find(source.model, t) == nullptr) source.absent_tables.push_back(t);
  if (const NamedTensors* optimizer = ckpt.file("optimizer")) source.optimizer = *optimizer;

  const std::string vocab_path =
      args.vocab.empty() ? run_dir_of(args.path) + "/vocab.txt" : args.vocab;
  source.vocab = load_vocab_file(vocab_path, str("--init-from ", args.path));
  const int64_t rows = state["vocab_size"].get<int64_t>();
  if (source.vocab.size() != rows)
    throw UsageError(str("--init-vocab/the checkpoint's vocabulary '", vocab_path, "' has ",
                         source.vocab.size(), " tokens but ", args.path, " has ", rows,
                         " table rows: pass the vocabulary it was trained with"));
  if (state.contains("vocab_hash") && state["vocab_hash"].get<uint64_t>() != source.vocab.hash())
    throw UsageError(str("the vocabulary '", vocab_path, "' is not the one ", args.path,
                         " was trained with (same size, other tokens or order): pass that one ",
                         "with --init-vocab FILE"));
  if (args.keep_optimizer) {
    if (source.config->optimizer.type != "adagrad" || source.optimizer.empty())
      throw UsageError(str("--init-optimizer: ", args.path, " has no Adagrad accumulators (it ",
                           source.optimizer.empty() ? "holds no optimizer state, e.g. an "
                                                      "import-bilm checkpoint"
                                                    : "was trained with optimizer.type = sgd",
                           "); drop --init-optimizer to start the optimizer fresh"));
  }
  return source;
}

InitSource load_hdf5_source(const InitSourceArgs& args) {
  InitSource source;
  source.origin = args.path;
  source.is_hdf5 = true;
  BilmWeights weights = import_bilm_hdf5(args.path);
  source.sizes = {weights.input_dim, weights.cell_size,
                  weights.has_projection ? weights.proj_dim : 0, weights.layers,
                  weights.bidirectional};
  source.model = std::move(weights.tensors);
  std::vector<std::string> present;
  for (const char* t : kTables)
    (find(source.model, t) ? present : source.absent_tables).push_back(t);
  if (present.empty()) {
    if (!args.vocab.empty())
      log_warn("--init-vocab ", args.vocab, " is not needed: ", args.path,
               " has no embedding or softmax rows to match");
    return source;
  }
  if (args.vocab.empty())
    throw UsageError(str("--init-from ", args.path, " holds ", present.front(),
                         " rows: pass their vocabulary (one token per row, in row order) with ",
                         "--init-vocab FILE"));
  source.vocab = load_vocab_file(args.vocab, str("--init-from ", args.path));
  for (const std::string& name : present) {
    const int64_t rows = find(source.model, name)->size(0);
    if (rows != source.vocab.size())
      throw UsageError(str("--init-vocab ", args.vocab, " has ", source.vocab.size(),
                           " tokens but ", name, " of ", args.path, " has ", rows,
                           " rows: pass the vocabulary of those rows"));
  }
  return source;
}

}  // namespace

void check_init_args(const InitSourceArgs& args, bool resume) {
  if (args.path.empty()) {
    if (!args.vocab.empty()) throw UsageError("--init-vocab needs --init-from PATH");
    if (args.keep_optimizer) throw UsageError("--init-optimizer needs --init-from PATH");
    return;
  }
  if (resume)
    throw UsageError(str("--init-from starts a new run from other weights and --resume continues ",
                         "this run: pass one of them (to fine-tune again, use a new run.dir)"));
  if (!fs::exists(args.path))
    throw UsageError(str("--init-from ", args.path, ": no such checkpoint folder or HDF5 file"));
  if (!args.vocab.empty() && !fs::is_regular_file(args.vocab))
    throw UsageError(str("--init-vocab ", args.vocab, ": no such file: give the vocabulary of ",
                         "the source's table rows (one token per line, in row order)"));
  if (args.keep_optimizer && !fs::is_directory(args.path))
    throw UsageError(str("--init-optimizer: ", args.path, " is a weights file without optimizer ",
                         "state; it needs an elmo_fast checkpoint (drop --init-optimizer)"));
}

InitSource load_init_source(const InitSourceArgs& args) {
  return fs::is_directory(args.path) ? load_checkpoint_source(args) : load_hdf5_source(args);
}

void check_sizes_match(const InitSource& source, const Config& config) {
  const ModelConfig& m = config.model;
  const SourceSizes& s = source.sizes;
  std::string problems, fixes;
  const auto compare = [&](const char* key, int64_t ours, int64_t theirs) {
    if (ours == theirs) return;
    problems += str(problems.empty() ? "" : "; ", "model.", key, " = ", ours,
                    " but the source has ", theirs);
    fixes += str(" --set model.", key, "=", theirs);
  };
  compare("embedding_dim", m.input_dim(), s.embedding_dim);
  compare("cell_size", m.cell_size, s.cell_size);
  compare("projection_dim", m.projection_dim, s.projection_dim);
  compare("layers", m.layers, s.layers);
  if (m.bidirectional != s.bidirectional) {
    problems += str(problems.empty() ? "" : "; ",
                    "model.bidirectional = ", m.bidirectional ? "true" : "false",
                    " but the source is ", s.bidirectional ? "bidirectional" : "forward only");
    fixes += str(" --set model.bidirectional=", s.bidirectional ? "true" : "false");
  }
  if (!problems.empty())
    throw UsageError(str("--init-from ", source.origin, ": the model sizes differ from the ",
                         "config's (", problems, "); make the config match the source, e.g.",
                         fixes));
  if (source.config) {
    const ModelConfig& t = source.config->model;
    if (t.cell_clip != m.cell_clip || t.proj_clip != m.proj_clip ||
        t.skip_connections != m.skip_connections)
      log_warn("--init-from ", source.origin, " was trained with cell_clip ", t.cell_clip,
               ", proj_clip ", t.proj_clip, ", skip_connections ", t.skip_connections,
               "; this run uses ", m.cell_clip, ", ", m.proj_clip, ", ", m.skip_connections);
  } else {
    log_info("--init-from ", source.origin, ": an HDF5 does not record clips or skip ",
             "connections; this run uses model.cell_clip = ", m.cell_clip,
             ", proj_clip = ", m.proj_clip,
             ", skip_connections = ", m.skip_connections ? "true" : "false");
  }
}

std::vector<int32_t> map_vocab_rows(const Vocab& from, const Vocab& to) {
  std::vector<int32_t> rows(static_cast<size_t>(to.size()), -1);
  for (int64_t i = 0; i < to.size(); ++i) {
    const std::string& token = to.token(static_cast<int32_t>(i));
    if (from.contains(token)) rows[i] = from.id(token);
  }
  return rows;
}

nlohmann::json InitReport::to_json(const std::string& origin) const {
  return {{"from", origin},
          {"rows_matched", matched},
          {"rows_added", added},
          {"rows_dropped", dropped},
          {"matched_token_share", matched_token_share},
          {"optimizer_kept", optimizer_kept},
          {"fresh_tables", fresh_tables}};
}

InitReport apply_init_source(const InitSource& source, const Vocab& vocab, BiLM& model,
                             Optimizer& optimizer, bool keep_optimizer,
                             const TokenCache& train_data) {
  InitReport report;
  const std::vector<int32_t> rows = map_vocab_rows(source.vocab, vocab);
  const bool has_tables = source.absent_tables.size() < std::size(kTables);
  for (const int32_t r : rows) (r >= 0 ? report.matched : report.added) += 1;
  report.dropped = has_tables ? source.vocab.size() - report.matched : 0;
  if (!has_tables) report.matched = 0, report.added = vocab.size();
  // The source row of each stored row of a table: a rank holding only its rows of a sharded
  // table (model/row_layout.h) takes the source rows of its home ids, at their slots.
  const auto rows_of = [&](const std::string& table) {
    const RowLayout* layout = model.table_layout(table);
    if (layout == nullptr || !layout->is_sharded()) return rows;
    std::vector<int32_t> home(static_cast<size_t>(layout->home()));
    for (int64_t s = 0; s < layout->home(); ++s) home[s] = rows[layout->home_id(s)];
    return home;
  };

  for (Parameter* p : model.params().all()) {
    const Tensor* src = find(source.model, p->name);
    if (is_table(p->name)) {
      if (src == nullptr) {
        report.fresh_tables.push_back(p->name);
        continue;
      }
      copy_matched_rows(*src, p->value, rows_of(p->name), str(source.origin, ": ", p->name));
      continue;
    }
    if (src == nullptr)
      throw Error(str("--init-from ", source.origin, ": parameter '", p->name, "' is missing"));
    if (!(src->shape() == p->value.shape()) || src->dtype() != DType::kF32)
      throw Error(str("--init-from ", source.origin, ": parameter '", p->name, "' is ",
                      src->describe(), " but the model needs f32", p->value.shape().str()));
    p->value.copy_from(*src);
  }

  if (keep_optimizer) {
    for (auto& [name, accumulator] : optimizer.state_tensors()) {
      const Tensor* src = find(source.optimizer, name);
      const std::string param = name.substr(0, name.size() - std::strlen(kAccumulatorSuffix));
      if (src == nullptr)
        throw Error(str("--init-optimizer: ", source.origin, " has no '", name, "'"));
      if (is_table(param)) {
        copy_matched_rows(*src, accumulator, rows_of(param), str(source.origin, ": ", name));
      } else {
        ELMO_REQUIRE(src->shape() == accumulator.shape(), "--init-optimizer: ", source.origin,
                     ": '", name, "' is ", src->describe(), " but the optimizer needs ",
                     accumulator.shape().str());
        accumulator.copy_from(*src);
      }
    }
    report.optimizer_kept = true;
  }

  int64_t words = 0, covered = 0;
  for (const TokenShard& shard : train_data.shards()) {
    const int64_t n = shard.tokens + shard.sentences;
    for (int64_t i = 0; i < n; ++i) {
      const uint32_t id = shard.ids[i];
      if (id == kSentenceEnd) continue;
      ++words;
      covered += has_tables && rows[id] >= 0;
    }
  }
  report.matched_token_share = words > 0 ? static_cast<double>(covered) / words : 0.0;
  return report;
}

}  // namespace elmo
