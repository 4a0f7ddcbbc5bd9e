// Planned row sums: the host-side plan, the CPU twin of the sum and the device dispatch. See
// row_sum.h.
#include <algorithm>
#include <limits>

#include "kernels/embedding.h"
#include "kernels/launchers.h"
#include "kernels/row_sum.h"
#include "runtime/error.h"
#include "runtime/parallel.h"

namespace elmo {

void build_row_sum_plan(const std::vector<std::pair<const int32_t*, int64_t>>& host_ids,
                        int64_t rows, RowSumPlan& plan, const std::vector<int32_t>& extra_ids,
                        const char* what) {
  int64_t total = 0;
  for (const auto& [ids, n] : host_ids) {
    ELMO_CHECK(n >= 0, "build_row_sum_plan: a segment has n = ", n);
    check_row_ids(ids, n, rows, what);
    total += n;
  }
  ELMO_CHECK(total < std::numeric_limits<int32_t>::max(), "build_row_sum_plan: ", total,
             " positions exceed the int32 positions of the plan");
  check_row_ids(extra_ids.data(), static_cast<int64_t>(extra_ids.size()), rows, what);
  std::vector<int32_t> extra(extra_ids);
  std::sort(extra.begin(), extra.end());
  extra.erase(std::unique(extra.begin(), extra.end()), extra.end());

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
  size_t next_extra = 0;
  // Extra ids below `bound` that no position has: output rows with an empty group at k.
  const auto add_extras_below = [&](int64_t bound, int64_t k) {
    for (; next_extra < extra.size() && extra[next_extra] < bound; ++next_extra) {
      plan.unique_ids.push_back(extra[next_extra]);
      plan.offsets.push_back(static_cast<int32_t>(k));
    }
  };
  for (int64_t k = 0; k < total; ++k) {
    const int32_t id = static_cast<int32_t>(keys[k] >> 32);
    if (plan.unique_ids.empty() || plan.unique_ids.back() != id) {
      add_extras_below(id, k);
      if (next_extra < extra.size() && extra[next_extra] == id) ++next_extra;
      plan.unique_ids.push_back(id);
      plan.offsets.push_back(static_cast<int32_t>(k));
    }
    plan.positions[k] = static_cast<int32_t>(keys[k] & 0xFFFFFFFFu);
  }
  add_extras_below(std::numeric_limits<int64_t>::max(), total);
  plan.offsets.push_back(static_cast<int32_t>(total));
}

void row_sum_by_plan_cpu(const RowSumSegment* segments, int num_segments, int64_t dim,
                         const int32_t* offsets, const int32_t* positions, int64_t n_out,
                         float* values, const RowSumTail& tail) {
  std::vector<int64_t> begin(static_cast<size_t>(num_segments) + 1, 0);
  for (int s = 0; s < num_segments; ++s) begin[s + 1] = begin[s] + segments[s].n;
  parallel_for(n_out, 16, [&](int64_t u0, int64_t u1) {
    for (int64_t u = u0; u < u1; ++u) {
      float* dst = values + u * dim;  // [dim]
      for (int64_t c = 0; c < dim; ++c) dst[c] = 0.0f;
      for (int32_t k = offsets[u]; k < offsets[u + 1]; ++k) {
        const int64_t p = positions[k];
        int s = 0;
        while (s + 1 < num_segments && p >= begin[s + 1]) ++s;
        const int64_t r = p - begin[s];
        const float* src = segments[s].rows + r * dim;  // [dim]
        if (segments[s].scale) {
          const float w = segments[s].scale[r];
          for (int64_t c = 0; c < dim; ++c) dst[c] += w * src[c];
        } else {
          for (int64_t c = 0; c < dim; ++c) dst[c] += src[c];
        }
      }
      const int32_t j = tail.index ? tail.index[u] : -1;
      if (j < 0) continue;
      if (tail.values) {
        const float* src = tail.values + static_cast<int64_t>(j) * dim;
        for (int64_t c = 0; c < dim; ++c) dst[c] += src[c];
      } else {
        const double* src = tail.values_f64 + static_cast<int64_t>(j) * dim;
        for (int64_t c = 0; c < dim; ++c) dst[c] += static_cast<float>(src[c]);
      }
    }
  });
}

void row_sum_by_plan(Device device, const RowSumSegment* segments, int num_segments, int64_t dim,
                     const int32_t* offsets, const int32_t* positions, int64_t n_out, float* values,
                     const RowSumTail& tail) {
  ELMO_CHECK(num_segments >= 0 && n_out >= 0 && dim >= 0, "row_sum_by_plan: ", num_segments,
             " segments, ", n_out, " output rows of dim ", dim);
  ELMO_CHECK(tail.index == nullptr || (tail.values != nullptr) != (tail.values_f64 != nullptr),
             "row_sum_by_plan: a tail needs exactly one of values and values_f64");
  if (device.is_cpu())
    row_sum_by_plan_cpu(segments, num_segments, dim, offsets, positions, n_out, values, tail);
  else
    row_sum_by_plan_cuda(segments, num_segments, dim, offsets, positions, n_out, values, tail);
}

}  // namespace elmo
