// CPU embedding gather and deterministic per-unique-id gradient reduction (the host plan and sum
// of kernels/row_sum.h), and the device dispatch.
#include <algorithm>
#include <cstring>
#include <limits>

#include "kernels/embedding.h"
#include "kernels/launchers.h"
#include "kernels/row_sum.h"
#include "runtime/parallel.h"

namespace elmo {

void check_row_ids(const int32_t* ids, int64_t n, int64_t rows, const char* what) {
  for (int64_t i = 0; i < n; ++i) {
    if (ids[i] < 0 || ids[i] >= rows) [[unlikely]]
      throw Error(str(what, ": id ", ids[i], " at position ", i, " is outside the table of ", rows,
                      " rows (valid ids are 0..", rows - 1,
                      "); the ids and the vocabulary size disagree"));
  }
}

void embedding_gather_cpu(const float* table, int64_t rows, int64_t dim, const int32_t* ids,
                          int64_t n, float* out) {
  check_row_ids(ids, n, rows, "embedding_gather");
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(dim, 1));
  parallel_for(n, grain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)  // out[i, :] = table[ids[i], :]
      std::memcpy(out + i * dim, table + static_cast<int64_t>(ids[i]) * dim,
                  static_cast<size_t>(dim) * sizeof(float));
  });
}

void embedding_gather(Device device, const float* table, int64_t rows, int64_t dim,
                      const int32_t* ids, int64_t n, float* out) {
  if (device.is_cpu())
    embedding_gather_cpu(table, rows, dim, ids, n, out);
  else
    embedding_gather_cuda(table, rows, dim, ids, n, out, nullptr);
}

void embedding_gather(const Tensor& table, const Tensor& ids, Tensor& out) {
  ELMO_CHECK(table.defined() && table.ndim() == 2, "embedding_gather: table must be [V, E], got ",
             table.defined() ? table.describe() : std::string("undefined"));
  const int64_t rows = table.size(0), dim = table.size(1);
  ELMO_CHECK(ids.defined() && ids.ndim() == 1, "embedding_gather: ids must be i32 [n]");
  const int64_t n = ids.size(0);
  check_tensor(table, "embedding_gather table", DType::kF32, table.shape());
  check_tensor(ids, "embedding_gather ids", DType::kI32, Shape{n});
  check_tensor(out, "embedding_gather output", DType::kF32, Shape{n, dim});
  check_same_device(table, ids, "embedding_gather");
  check_same_device(table, out, "embedding_gather");
  if (table.device().is_cpu()) {
    embedding_gather_cpu(table.data<float>(), rows, dim, ids.data<int32_t>(), n, out.data<float>());
    return;
  }
  // CUDA: the kernel records the first bad position; read it back and report it.
  Tensor flag = Tensor::empty({1}, DType::kI64, table.device());
  Tensor host_flag = Tensor::empty({1}, DType::kI64);
  host_flag.data<int64_t>()[0] = std::numeric_limits<int64_t>::max();
  flag.copy_from(host_flag);
  embedding_gather_cuda(table.data<float>(), rows, dim, ids.data<int32_t>(), n, out.data<float>(),
                        flag.data<int64_t>());
  host_flag.copy_from(flag);
  const int64_t bad = host_flag.data<int64_t>()[0];
  if (bad != std::numeric_limits<int64_t>::max()) {
    Tensor id = ids.rows(bad, bad + 1).to(Device::cpu());
    check_row_ids(id.data<int32_t>(), 1, rows, "embedding_gather");
    throw Error(str("embedding_gather: device reported a bad id at position ", bad));
  }
}

void embedding_backward_cpu(const RowGradSegment* segments, int num_segments, int64_t dim,
                            int64_t rows, std::vector<int32_t>& unique_ids, Tensor& values) {
  std::vector<std::pair<const int32_t*, int64_t>> host_ids;
  std::vector<RowSumSegment> inputs;
  for (int s = 0; s < num_segments; ++s) {
    ELMO_CHECK(segments[s].n >= 0, "embedding_backward: segment ", s, " has n = ", segments[s].n);
    host_ids.emplace_back(segments[s].ids, segments[s].n);
    inputs.push_back({segments[s].dy, nullptr, segments[s].n});
  }
  RowSumPlan plan;
  build_row_sum_plan(host_ids, rows, plan);
  const int64_t n_unique = static_cast<int64_t>(plan.unique_ids.size());
  values = Tensor::empty({n_unique, dim});  // [|U|, dim]
  row_sum_by_plan_cpu(inputs.data(), num_segments, dim, plan.offsets.data(), plan.positions.data(),
                      n_unique, values.data<float>(), RowSumTail{});
  unique_ids = std::move(plan.unique_ids);
}

void embedding_backward(const std::vector<Tensor>& ids, const std::vector<Tensor>& dy, int64_t rows,
                        std::vector<int32_t>& unique_ids, Tensor& values) {
  ELMO_CHECK(!ids.empty() && ids.size() == dy.size(), "embedding_backward: ", ids.size(),
             " id tensors for ", dy.size(), " gradient tensors");
  const int64_t dim = dy[0].ndim() == 2 ? dy[0].size(1) : -1;
  ELMO_CHECK(dim >= 0, "embedding_backward: dy must be [n, dim], got ", dy[0].describe());
  const Device device = ids[0].device();
  std::vector<RowGradSegment> segments;
  for (size_t k = 0; k < ids.size(); ++k) {
    ELMO_CHECK(ids[k].defined() && ids[k].ndim() == 1, "embedding_backward: ids[", k,
               "] must be i32 [n]");
    const int64_t n = ids[k].size(0);
    check_tensor(ids[k], "embedding_backward ids", DType::kI32, Shape{n});
    check_tensor(dy[k], "embedding_backward dy", DType::kF32, Shape{n, dim});
    check_same_device(ids[k], dy[k], "embedding_backward");
    ELMO_CHECK(ids[k].device() == device, "embedding_backward: inputs on ", device.str(), " and ",
               ids[k].device().str());
    segments.push_back({ids[k].data<int32_t>(), dy[k].data<float>(), n});
  }
  if (device.is_cpu())
    embedding_backward_cpu(segments.data(), static_cast<int>(segments.size()), dim, rows,
                           unique_ids, values);
  else
    embedding_backward_cuda(segments.data(), static_cast<int>(segments.size()), dim, rows,
                            device.index, unique_ids, values);
}

}  // namespace elmo
