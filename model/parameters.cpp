#include "model/parameters.h"

namespace elmo {

Parameter& ParameterStore::add(const std::string& name, const Shape& shape, bool row_sparse,
                               Device device) {
  ELMO_CHECK(!has(name), "parameter '", name, "' registered twice");
  Parameter& p = params_.emplace_back();
  p.name = name;
  p.value = Tensor::zeros(shape, DType::kF32, device);
  p.row_sparse = row_sparse;
  if (!row_sparse) p.grad = Tensor::zeros(shape, DType::kF32, device);
  index_[name] = params_.size() - 1;
  return p;
}

Parameter& ParameterStore::get(const std::string& name) {
  auto it = index_.find(name);
  ELMO_CHECK(it != index_.end(), "no parameter named '", name, "'");
  return params_[it->second];
}

const Parameter& ParameterStore::get(const std::string& name) const {
  auto it = index_.find(name);
  ELMO_CHECK(it != index_.end(), "no parameter named '", name, "'");
  return params_[it->second];
}

std::vector<Parameter*> ParameterStore::all() {
  std::vector<Parameter*> out;
  for (Parameter& p : params_) out.push_back(&p);
  return out;
}

std::vector<const Parameter*> ParameterStore::all() const {
  std::vector<const Parameter*> out;
  for (const Parameter& p : params_) out.push_back(&p);
  return out;
}

int64_t ParameterStore::numel() const {
  int64_t n = 0;
  for (const Parameter& p : params_) n += p.value.numel();
  return n;
}

void ParameterStore::zero_grads() {
  for (Parameter& p : params_) {
    if (p.row_sparse) p.sparse_grad.clear();
    else p.grad.zero_();
  }
}

}  // namespace elmo
