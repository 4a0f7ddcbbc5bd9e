#include "model/embedding.h"

#include <algorithm>

#include "kernels/embedding.h"
#include "kernels/row_sum.h"

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

void init_uniform_rows(Parameter& param, const RowLayout& layout, float scale, Rng& rng) {
  if (!layout.is_sharded()) return init_uniform(param, scale, rng);
  const int64_t dim = param.row_dim(), home = layout.home();
  ELMO_CHECK(param.rows() >= home, "init_uniform_rows: ", param.name, " has ", param.rows(),
             " rows, its layout ", home, " home rows");
  Tensor host = Tensor::empty({home, dim});
  float* x = host.data<float>();
  for (int64_t id = 0; id < layout.vocab; ++id) {
    float* row = layout.is_home(id) ? x + layout.home_slot(id) * dim : nullptr;
    for (int64_t e = 0; e < dim; ++e) {
      const float v = (2.0f * rng.uniform() - 1.0f) * scale;
      if (row) row[e] = v;
    }
  }
  param.value.rows(0, home).copy_from(param.value.ndim() == 1 ? host.reshape({home}) : host);
}

void init_normal(Parameter& param, float scale, Rng& rng) {
  init_with(param, [&] { return rng.normal() * scale; });
}

void embedding_forward(const Parameter& embedding, const Tensor& ids, Tensor& out,
                       const int32_t* host_ids) {
  ELMO_CHECK(ids.defined() && ids.ndim() == 1, "embedding_forward: ids must be i32 [n], got ",
             ids.defined() ? ids.describe() : std::string("undefined"));
  const Device device = embedding.value.device();
  const Shape shape{ids.size(0), embedding.value.size(1)};
  if (!out.defined() || !(out.shape() == shape) || out.dtype() != DType::kF32 ||
      !(out.device() == device))
    out = Tensor::empty(shape, DType::kF32, device);
  if (device.is_cpu() || host_ids == nullptr) {
    embedding_gather(embedding.value, ids, out);
    return;
  }
  check_tensor(ids, "embedding_forward ids", DType::kI32, Shape{shape[0]});
  check_same_device(embedding.value, ids, "embedding_forward");
  check_row_ids(host_ids, shape[0], embedding.rows(), "embedding_forward");
  embedding_gather(device, embedding.value.data<float>(), embedding.rows(), shape[1],
                   ids.data<int32_t>(), shape[0], out.data<float>());
}

namespace {
// Backward with the ids' host copies: the plan is built on the host, the device only sums.
void embedding_backward_planned(Parameter& embedding, const std::vector<EmbeddingGrad>& grads,
                                int64_t id_rows) {
  const Device device = embedding.value.device();
  const int64_t dim = embedding.row_dim();
  SparseRows& grad = embedding.sparse_grad;
  std::vector<std::pair<const int32_t*, int64_t>> host_ids;
  std::vector<RowSumSegment> segments;
  if (!grad.ids.empty()) {  // the existing rows enter the sum first
    const int64_t n = static_cast<int64_t>(grad.ids.size());
    host_ids.emplace_back(grad.ids.data(), n);
    segments.push_back({grad.values.data<float>(), nullptr, n});
  }
  for (const EmbeddingGrad& g : grads) {
    const int64_t n = g.dy.size(0);
    check_tensor(g.ids, "embedding_backward ids", DType::kI32, Shape{n});
    check_same_device(embedding.value, g.ids, "embedding_backward ids");
    check_same_device(embedding.value, g.dy, "embedding_backward dy");
    host_ids.emplace_back(g.host_ids, n);
    segments.push_back({g.dy.data<float>(), nullptr, n});
  }
  RowSumPlan plan;
  build_row_sum_plan(host_ids, id_rows, plan);
  const int64_t n_unique = static_cast<int64_t>(plan.unique_ids.size());
  Tensor offsets, positions;  // device copies of the plan (unused on the CPU)
  const auto* d_offsets = static_cast<const int32_t*>(
      host_data_on(device, plan.offsets.data(), sizeof(int32_t) * plan.offsets.size(), offsets));
  const auto* d_positions = static_cast<const int32_t*>(host_data_on(
      device, plan.positions.data(), sizeof(int32_t) * plan.positions.size(), positions));
  Tensor values = Tensor::empty({n_unique, dim}, DType::kF32, device);  // [|U|, dim]
  row_sum_by_plan(device, segments.data(), static_cast<int>(segments.size()), dim, d_offsets,
                  d_positions, n_unique, values.data<float>());
  grad.ids = std::move(plan.unique_ids);
  grad.values = std::move(values);
}
}  // namespace

void embedding_backward(Parameter& embedding, const std::vector<EmbeddingGrad>& grads,
                        int64_t id_rows) {
  if (id_rows <= 0) id_rows = embedding.rows();
  ELMO_CHECK(embedding.row_sparse, "embedding_backward: '", embedding.name,
             "' is not a row-sparse parameter");
  const Device device = embedding.value.device();
  for (const EmbeddingGrad& g : grads)
    ELMO_CHECK(g.dy.defined() && g.dy.ndim() == 2 && g.dy.size(1) == embedding.row_dim(),
               "embedding_backward: d_emb must be [n, ", embedding.row_dim(), "], got ",
               g.dy.defined() ? g.dy.describe() : std::string("undefined"));
  bool planned = !grads.empty();
  for (const EmbeddingGrad& g : grads) planned = planned && g.host_ids != nullptr;
  if (planned) {
    embedding_backward_planned(embedding, grads, id_rows);
    return;
  }
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
    ids.push_back(g.ids);
    dy.push_back(g.dy);
  }
  if (ids.empty()) return;
  std::vector<int32_t> unique_ids;
  Tensor values;
  embedding_backward(ids, dy, id_rows, unique_ids, values);
  grad.ids = std::move(unique_ids);
  grad.values = std::move(values);
}

}  // namespace elmo
