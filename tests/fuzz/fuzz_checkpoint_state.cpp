// Fuzz target: a checkpoint's state.json and what it steers (load_checkpoint: format, step,
// file list, and the "shards" entry that assembles distributed checkpoints: axes, interleaving,
// shard names). Input: the state.json text of a step folder that also holds small tensor files
// named model, optimizer, carry, shard-0 and shard-1 (made once, below). Invariant: a checkpoint
// that loads holds whole, defined tensors with the step state.json names.
#include <filesystem>
#include <nlohmann/json.hpp>

#include "io/checkpoint.h"
#include "runtime/error.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

elmo::Tensor filled(const elmo::Shape& shape, float value) {
  elmo::Tensor t = elmo::Tensor::empty(shape);
  t.fill_(value);
  return t;
}

std::string step_dir() {
  static const std::string dir = [] {
    using elmo::save_safetensors;
    const std::string d = elmo::fuzz::scratch_dir() + "/checkpoints/step-3";
    std::filesystem::create_directories(d);
    // A 2-rank checkpoint of a table with 2 hot rows and 3 tail rows dealt over 2 shards, and a
    // carried state of 2 rows split by rank (axis 1), as data-parallel runs write them.
    save_safetensors(d + "/model.safetensors",
                     {{"embedding.weight", filled({2, 3}, 1)}, {"lstm.bias", filled({4}, 2)}});
    save_safetensors(d + "/optimizer.safetensors",
                     {{"embedding.weight.adagrad_acc", filled({2, 3}, 3)}});
    save_safetensors(d + "/carry.safetensors", {{"carry.fwd.h", filled({1, 2, 3}, 4)}});
    save_safetensors(d + "/shard-0.safetensors",
                     {{"model/embedding.weight", filled({2, 3}, 5)},
                      {"optimizer/embedding.weight.adagrad_acc", filled({2, 3}, 6)},
                      {"carry/carry.fwd.h", filled({1, 1, 3}, 7)}});
    save_safetensors(d + "/shard-1.safetensors",
                     {{"model/embedding.weight", filled({1, 3}, 8)},
                      {"optimizer/embedding.weight.adagrad_acc", filled({1, 3}, 9)},
                      {"carry/carry.fwd.h", filled({1, 1, 3}, 10)}});
    return d;
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  elmo::fuzz::quiet();
  step_dir();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace elmo;
  const std::string dir = step_dir();
  fuzz::scratch_file("checkpoints/step-3/state.json", fuzz::as_text(data, size));
  CheckpointData ckpt;
  try {
    ckpt = load_checkpoint(dir);
  } catch (const Error&) {
    return 0;
  }
  const nlohmann::json state = nlohmann::json::parse(fuzz::as_text(data, size));
  if (ckpt.step != state.at("step").get<int64_t>()) fuzz::fail("the step is not state.json's");
  for (const auto& [name, tensors] : ckpt.files)
    for (const auto& [tensor_name, tensor] : tensors)
      if (!tensor.defined() || tensor_name.empty()) fuzz::fail("an undefined or unnamed tensor");
  return 0;
}
