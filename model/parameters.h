// Parameter registry: every trainable tensor by its DESIGN.md §5 name, in a fixed order.
//
// Dense parameters carry a dense gradient of the same shape. Row-sparse parameters (embedding,
// softmax weight and bias) carry a SparseRows gradient: the unique ids touched by the step (in
// ascending order) and one summed gradient row per id. The optimizer, the gradient-norm clip,
// checkpoints and (later) the all-reduce walk the registry in insertion order, so results do
// not depend on hash-map order.
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <unordered_map>
#include <vector>

#include "runtime/tensor.h"

namespace elmo {

// Gradient rows of a [rows, dim] table (a 1-D table such as softmax.bias has dim 1).
struct SparseRows {
  std::vector<int32_t> ids;  // unique, ascending
  Tensor values;             // [ids.size(), dim]
  void clear() {
    ids.clear();
    values = Tensor();
  }
};

struct Parameter {
  std::string name;
  Tensor value;
  Tensor grad;           // dense parameters: same shape as value
  bool row_sparse = false;
  SparseRows sparse_grad;  // row-sparse parameters
  // Row-sparse parameters: rows [0, state_rows) have optimizer state and may be updated; the
  // rows after them are a rank's step cache of fetched rows (model/row_layout.h). 0: every row.
  int64_t state_rows = 0;

  int64_t rows() const { return value.size(0); }
  int64_t row_dim() const { return value.ndim() == 1 ? 1 : value.numel() / value.size(0); }
  int64_t updatable_rows() const { return state_rows > 0 ? state_rows : rows(); }
};

class ParameterStore {
 public:
  ParameterStore() = default;
  ParameterStore(const ParameterStore&) = delete;
  ParameterStore& operator=(const ParameterStore&) = delete;

  // Adds a zero-initialised parameter (and, for dense ones, its zeroed gradient).
  Parameter& add(const std::string& name, const Shape& shape, bool row_sparse = false,
                 Device device = Device::cpu());
  bool has(const std::string& name) const { return index_.count(name) != 0; }
  Parameter& get(const std::string& name);
  const Parameter& get(const std::string& name) const;

  std::vector<Parameter*> all();
  std::vector<const Parameter*> all() const;
  size_t size() const { return params_.size(); }
  int64_t numel() const;

  void zero_grads();  // dense grads to 0, sparse grads emptied

 private:
  std::deque<Parameter> params_;  // stable addresses
  std::unordered_map<std::string, size_t> index_;
};

}  // namespace elmo
