#include "model/embedding.h"

#include <algorithm>

#include "kernels/embedding.h"

namespace elmo {

Parameter& register_embedding(ParameterStore& params, int64_t vocab, int64_t dim, Device device) {
  ELMO_REQUIRE(vocab > 0 && dim > 0, "embedding: vocabulary size (", vocab, ") and dimension (",
               dim, ") must be positive");
  return params.add(kEmbeddingWeight, {vocab, dim}, /*row_sparse=*/true, device);
}

namespace {
template <typename Draw>
void init_with(Parameter& param, Draw draw) {
  Tensor host = Tensor::empty(param.value.shape());
  float* x = host.data<float>();
  for (int64_t e = 0; e < host.numel(); ++e) x[e] = draw();
  param.value.copy_from(host);
}
}  // namespace

void init_uniform(Parameter& param, float scale, Rng& rng) {
  init_with(param, [&] { return (2.0f * rng.uniform() - 1.0f) * scale; });
}

void init_normal(Parameter& param, float scale, Rng& rng) {
  init_with(param, [&] { return rng.normal() * scale; });
}

void embedding_forward(const Parameter& embedding, const Tensor& ids, Tensor& out) {
  ELMO_CHECK(ids.defined() && ids.ndim() == 1, "embedding_forward: ids must be i32 [n], got ",
             ids.defined() ? ids.describe() : std::string("undefined"));
  const Shape shape{ids.size(0), embedding.value.size(1)};
  if (!out.defined() || !(out.shape() == shape) || out.dtype() != DType::kF32 ||
      !(out.device() == embedding.value.device()))
    out = Tensor::empty(shape, DType::kF32, embedding.value.device());
  embedding_gather(embedding.value, ids, out);
}

void embedding_backward(Parameter& embedding, const std::vector<EmbeddingGrad>& grads) {
  ELMO_CHECK(embedding.row_sparse, "embedding_backward: '", embedding.name,
             "' is not a row-sparse parameter");
  const Device device = embedding.value.device();
  std::vector<Tensor> ids, dy;
  SparseRows& grad = embedding.sparse_grad;
  if (!grad.ids.empty()) {  // the existing rows enter the sum first
    const int64_t n = static_cast<int64_t>(grad.ids.size());
    Tensor old_ids = Tensor::empty({n}, DType::kI32);
    std::copy(grad.ids.begin(), grad.ids.end(), old_ids.data<int32_t>());
    ids.push_back(old_ids.to(device));
    dy.push_back(grad.values.reshape({n, embedding.row_dim()}));
  }
  for (const EmbeddingGrad& g : grads) {
    ELMO_CHECK(g.dy.defined() && g.dy.ndim() == 2 && g.dy.size(1) == embedding.row_dim(),
               "embedding_backward: d_emb must be [n, ", embedding.row_dim(), "], got ",
               g.dy.defined() ? g.dy.describe() : std::string("undefined"));
    ids.push_back(g.ids);
    dy.push_back(g.dy);
  }
  if (ids.empty()) return;
  std::vector<int32_t> unique_ids;
  Tensor values;
  embedding_backward(ids, dy, embedding.rows(), unique_ids, values);
  grad.ids = std::move(unique_ids);
  grad.values = std::move(values);
}

}  // namespace elmo
