// `elmo_fast import-bilm` / `export-bilm`: bilm-tf/allennlp HDF5 weights <-> checkpoints.
#include <filesystem>

#include "app/commands.h"
#include "app/session.h"
#include "io/bilm_hdf5.h"
#include "runtime/log.h"

namespace elmo {

namespace fs = std::filesystem;

namespace {
const Tensor* find_tensor(const NamedTensors& tensors, const std::string& name) {
  for (const auto& [n, t] : tensors)
    if (n == name) return &t;
  return nullptr;
}
}  // namespace

int import_bilm_command(const ImportArgs& args) {
  if (find_latest_checkpoint(args.out))
    throw UsageError(str("--out '", args.out, "' already holds a checkpoint; choose a new folder"));
  BilmWeights weights = import_bilm_hdf5(args.weights);
  NamedTensors tensors = weights.tensors;
  if (!args.embedding.empty()) {
    tensors.erase(std::remove_if(tensors.begin(), tensors.end(),
                                 [](const auto& t) { return t.first == "embedding.weight"; }),
                  tensors.end());
    tensors.emplace_back("embedding.weight", read_hdf5_matrix(args.embedding, "embedding"));
  }
  if (!args.softmax.empty()) {
    tensors.emplace_back("softmax.weight", read_hdf5_matrix(args.softmax, "softmax/W"));
    const Tensor b = read_hdf5_matrix(args.softmax, "softmax/b");
    tensors.emplace_back("softmax.bias", b.reshape({b.numel()}));
  }
  const Tensor* embedding = find_tensor(tensors, "embedding.weight");
  if (embedding == nullptr)
    throw UsageError(str(args.weights, " has no 'embedding' dataset: pass the token embeddings ",
                         "with --embedding FILE (dataset 'embedding' [V, dim])"));
  const Vocab vocab = Vocab::load(args.vocab);
  if (vocab.size() != embedding->size(0))
    throw UsageError(str("the vocabulary ", args.vocab, " has ", vocab.size(),
                         " tokens but the embedding has ", embedding->size(0), " rows"));
  if (embedding->size(1) != weights.input_dim)
    throw UsageError(str("the embedding has ", embedding->size(1), " columns but the LSTM's ",
                         "first layer reads ", weights.input_dim));

  Config config;
  config.run.dir = args.out;
  config.data.vocab = "";
  config.model.embedding_dim = weights.input_dim;
  config.model.cell_size = weights.cell_size;
  config.model.projection_dim = weights.has_projection ? weights.proj_dim : 0;
  config.model.layers = weights.layers;
  config.model.cell_clip = args.cell_clip;
  config.model.proj_clip = args.proj_clip;
  config.model.skip_connections = args.skip_connections;
  config.model.bidirectional = weights.bidirectional;
  config.model.dropout = 0.0;
  config.softmax.samples = std::min<int64_t>(config.softmax.samples, vocab.size() - 1);
  validate_config(config);

  BiLM model(bilm_shape(config, vocab.size()), bilm_options(config));
  const bool has_softmax = find_tensor(tensors, "softmax.weight") != nullptr;
  if (!has_softmax) {
    log_warn("no softmax weights in the input: the softmax is zero, so perplexities of this ",
             "checkpoint are meaningless until it is trained (embeddings are unaffected)");
    tensors.emplace_back("softmax.weight", Tensor::zeros({vocab.size(), model.shape().hidden()}));
    tensors.emplace_back("softmax.bias", Tensor::zeros({vocab.size()}));
  }
  load_model_tensors(model, tensors, args.weights);

  fs::create_directories(args.out);
  vocab.save(args.out + "/vocab.txt");
  CheckpointData ckpt;
  ckpt.step = 0;
  ckpt.state["tokens"] = 0;
  ckpt.state["imported_from"] = args.weights;
  ckpt.state["config"] = config_to_toml(config);
  ckpt.state["config_hash"] = config_hash(config);
  ckpt.state["model_shape_hash"] = model_shape_hash(config, vocab.size());
  ckpt.state["vocab_size"] = vocab.size();
  ckpt.state["vocab_hash"] = vocab.hash();
  ckpt.state["world_size"] = 1;
  // The zero softmax stands in for weights the input did not have: `train --init-from` gives
  // such tables a fresh initialisation instead of copying the zeros.
  if (!has_softmax) ckpt.state["tables_not_imported"] = {"softmax.weight", "softmax.bias"};
  ckpt.files.emplace_back("model", model_tensors(model));
  const std::string path = save_checkpoint(args.out, ckpt, 0);
  log_info("imported ", args.weights, " (", weights.layers, " layers, cell ", weights.cell_size,
           ", projection ", config.model.projection_dim, ", vocab ", vocab.size(), ") into ", path);
  return 0;
}

int export_bilm_command(const ExportArgs& args) {
  LoadedModel loaded = load_model(args.checkpoint);
  export_bilm_hdf5(args.out, model_tensors(*loaded.model));
  log_info("exported step ", loaded.checkpoint.step, " to ", args.out,
           " (bilm-tf layout, with embedding and softmax)");
  return 0;
}

}  // namespace elmo
