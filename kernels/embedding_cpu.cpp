// CPU embedding gather and deterministic per-unique-id gradient reduction.
#include <algorithm>
#include <cstring>
#include <limits>

#include "kernels/embedding.h"
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
  int64_t total = 0;
  for (int s = 0; s < num_segments; ++s) {
    ELMO_CHECK(segments[s].n >= 0, "embedding_backward: segment ", s, " has n = ", segments[s].n);
    check_row_ids(segments[s].ids, segments[s].n, rows, "embedding_backward");
    total += segments[s].n;
  }
  ELMO_CHECK(total < (int64_t{1} << 32), "embedding_backward: ", total,
             " positions exceed the 2^32 the sort key holds");

  // Sort key (id << 32 | position): sorting it orders by id, then by position.
  std::vector<uint64_t> keys(static_cast<size_t>(total));
  std::vector<const float*> row_of(static_cast<size_t>(total));  // position -> dy row
  int64_t pos = 0;
  for (int s = 0; s < num_segments; ++s) {
    for (int64_t i = 0; i < segments[s].n; ++i, ++pos) {
      keys[pos] = (static_cast<uint64_t>(segments[s].ids[i]) << 32) | static_cast<uint64_t>(pos);
      row_of[pos] = segments[s].dy + i * dim;
    }
  }
  std::sort(keys.begin(), keys.end());

  // Segment starts: starts[k] .. starts[k + 1] are the sorted entries of unique id k.
  unique_ids.clear();
  std::vector<int64_t> starts;
  for (int64_t k = 0; k < total; ++k) {
    const int32_t id = static_cast<int32_t>(keys[k] >> 32);
    if (unique_ids.empty() || unique_ids.back() != id) {
      unique_ids.push_back(id);
      starts.push_back(k);
    }
  }
  starts.push_back(total);
  const int64_t n_unique = static_cast<int64_t>(unique_ids.size());
  values = Tensor::empty({n_unique, dim});  // [|U|, dim]
  float* out = values.data<float>();
  // About 8k floats of work per chunk: (rows per unique id) * dim per item.
  const int64_t work_per_id = std::max<int64_t>(1, dim * total / std::max<int64_t>(n_unique, 1));
  const int64_t grain = std::max<int64_t>(1, 8192 / work_per_id);
  parallel_for(n_unique, grain, [&](int64_t begin, int64_t end) {
    for (int64_t u = begin; u < end; ++u) {
      float* dst = out + u * dim;
      for (int64_t c = 0; c < dim; ++c) dst[c] = 0.0f;  // same start as the CUDA kernel
      for (int64_t k = starts[u]; k < starts[u + 1]; ++k) {
        const float* src = row_of[keys[k] & 0xFFFFFFFFu];
        for (int64_t c = 0; c < dim; ++c) dst[c] += src[c];
      }
    }
  });
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

void build_row_sum_plan(const std::vector<std::pair<const int32_t*, int64_t>>& host_ids,
                        int64_t rows, RowSumPlan& plan) {
  int64_t total = 0;
  for (const auto& [ids, n] : host_ids) {
    ELMO_CHECK(n >= 0, "build_row_sum_plan: a segment has n = ", n);
    check_row_ids(ids, n, rows, "embedding_backward");
    total += n;
  }
  ELMO_CHECK(total < std::numeric_limits<int32_t>::max(), "build_row_sum_plan: ", total,
             " positions exceed the int32 positions of the plan");
  // Sort key (id << 32 | position): sorting it orders by id, then by position.
  std::vector<uint64_t> keys(static_cast<size_t>(total));
  int64_t pos = 0;
  for (const auto& [ids, n] : host_ids)
    for (int64_t i = 0; i < n; ++i, ++pos)
      keys[pos] = (static_cast<uint64_t>(ids[i]) << 32) | static_cast<uint64_t>(pos);
  std::sort(keys.begin(), keys.end());
  plan.unique_ids.clear();
  plan.offsets.clear();
  plan.positions.resize(static_cast<size_t>(total));
  for (int64_t k = 0; k < total; ++k) {
    const int32_t id = static_cast<int32_t>(keys[k] >> 32);
    if (plan.unique_ids.empty() || plan.unique_ids.back() != id) {
      plan.unique_ids.push_back(id);
      plan.offsets.push_back(static_cast<int32_t>(k));
    }
    plan.positions[k] = static_cast<int32_t>(keys[k] & 0xFFFFFFFFu);
  }
  plan.offsets.push_back(static_cast<int32_t>(total));
}

void row_sum_by_plan_cpu(const RowGradSegment* segments, int num_segments, int64_t dim,
                         const int32_t* offsets, const int32_t* positions, int64_t n_unique,
                         float* values) {
  std::vector<int64_t> begin(static_cast<size_t>(num_segments) + 1, 0);
  for (int s = 0; s < num_segments; ++s) begin[s + 1] = begin[s] + segments[s].n;
  parallel_for(n_unique, 16, [&](int64_t u0, int64_t u1) {
    for (int64_t u = u0; u < u1; ++u) {
      float* dst = values + u * dim;
      for (int64_t c = 0; c < dim; ++c) dst[c] = 0.0f;
      for (int32_t k = offsets[u]; k < offsets[u + 1]; ++k) {
        const int64_t p = positions[k];
        int s = 0;
        while (s + 1 < num_segments && p >= begin[s + 1]) ++s;
        const float* src = segments[s].dy + (p - begin[s]) * dim;
        for (int64_t c = 0; c < dim; ++c) dst[c] += src[c];
      }
    }
  });
}

}  // namespace elmo
