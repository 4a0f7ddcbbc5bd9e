// Output file of `elmo_fast embed`, in allennlp's `elmo.py` layout.
//
// One float32 dataset per sentence named by its index ("0", "1", ...): [num_layers, n_tokens, 2P]
// (or [n_tokens, 2P] after a scalar mix), plus "sentence_to_index": a one-element variable-length
// UTF-8 string dataset holding the JSON object {"<sentence text>": "<index>"} (a sentence that
// occurs twice maps to its last index, as in allennlp).
// The writer fills "<path>.tmp-<pid>" and renames it to <path> in close(); a writer destroyed
// without close() (an exception unwinding) removes the temporary file and leaves <path> alone.
// What it is not: a streaming reader for huge files (read_embeddings_hdf5 loads everything; it
// exists for tests and small tools).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "runtime/tensor.h"

namespace elmo {

class EmbeddingsHdf5Writer {
 public:
  explicit EmbeddingsHdf5Writer(const std::string& path);
  ~EmbeddingsHdf5Writer();
  EmbeddingsHdf5Writer(const EmbeddingsHdf5Writer&) = delete;
  EmbeddingsHdf5Writer& operator=(const EmbeddingsHdf5Writer&) = delete;

  // Writes dataset "<size()>" from an f32 tensor [L, n, 2P] or [n, 2P] (any device) and records
  // sentence_text (tokens joined by single spaces) -> index.
  void add(const std::string& sentence_text, const Tensor& embeddings);
  int64_t size() const { return count_; }
  // Writes sentence_to_index, closes the file and renames it into place.
  void close();

 private:
  std::string path_;
  std::string tmp_path_;
  int64_t file_ = -1;  // hid_t
  int64_t count_ = 0;
  nlohmann::json sentence_to_index_ = nlohmann::json::object();
};

struct EmbeddingsHdf5 {
  std::vector<Tensor> sentences;  // dataset "i" at position i
  nlohmann::json sentence_to_index = nlohmann::json::object();  // {} when the file has none
};

// Reads every numbered dataset (they must be 0..N-1) and sentence_to_index when present.
EmbeddingsHdf5 read_embeddings_hdf5(const std::string& path);

}  // namespace elmo
