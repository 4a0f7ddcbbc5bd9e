// Planned row sums: the deterministic per-id reduction behind every row-sparse gradient (the
// embedding's, and the sampled softmax's touched rows).
//
// A plan fixes, on the host, which input rows each output row sums and in which order:
//   unique_ids   the output rows' ids, ascending
//   positions    the input rows (indices into the segments concatenated in order), grouped by
//                output row and ascending within a group: output u sums
//                positions[offsets[u] .. offsets[u + 1])
// and the sum is
//   values[u, :] = sum over k of w(p_k) * x(p_k)[:]   (+ tail row of u, added last)
// where x(p) is row p of the concatenated segments and w(p) its segment's per-row scale (no
// scale: the row is added as it is). Each element is one sequential sum from 0.0f in k order,
// every product and sum rounded on its own (no FMA): the CPU and CUDA backends agree bit for
// bit, and nothing depends on thread timing (no atomics).
//
// Users: the embedding gradient (ids = the batch's token ids, x = dy, no scale; the CUDA
// embedding_backward sorts on the device and feeds the same sum) and the sampled softmax
// (ids = both directions' targets plus the samples as extra output rows, x = h scaled by dtrue,
// the samples' own gradient rows as the tail).
// What it is not: a scatter-add (kernels/row_scatter.h writes rows) or the sort itself.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "runtime/dtype.h"

namespace elmo {

struct RowSumPlan {
  std::vector<int32_t> unique_ids;  // [n_out] ascending
  std::vector<int32_t> offsets;     // [n_out + 1]
  std::vector<int32_t> positions;   // [total]
};

// host_ids: {ids, n} per segment, host memory, concatenated in order. extra_ids: ids that get
// an output row even if no input row has them (their group is empty); any order, repeats
// allowed. Every id must be in [0, rows): an Error names the first one that is not (tagged
// `what`). The positions are int32: at most 2^31 - 1 input rows.
void build_row_sum_plan(const std::vector<std::pair<const int32_t*, int64_t>>& host_ids,
                        int64_t rows, RowSumPlan& plan, const std::vector<int32_t>& extra_ids = {},
                        const char* what = "embedding_backward");

// One input segment: rows [n, dim] and an optional per-row scale [n].
struct RowSumSegment {
  const float* rows = nullptr;
  const float* scale = nullptr;
  int64_t n = 0;
};
constexpr int kMaxRowSumSegments = 8;  // CUDA passes the segment table by value

// An optional last addend per output row: row tail.index[u] of the tail rows (-1: none).
// The tail rows are f32 (`values`) or f64 (`values_f64`, rounded to f32 before the add).
struct RowSumTail {
  const int32_t* index = nullptr;  // [n_out] | nullptr (no tail)
  const float* values = nullptr;   // [*, dim]
  const double* values_f64 = nullptr;
};

// Entry point: every pointer on `device` (the plan's offsets [n_out + 1] and positions as
// well). values [n_out, dim] is overwritten. CUDA: at most kMaxRowSumSegments segments,
// launched on the current stream.
void row_sum_by_plan(Device device, const RowSumSegment* segments, int num_segments, int64_t dim,
                     const int32_t* offsets, const int32_t* positions, int64_t n_out, float* values,
                     const RowSumTail& tail = {});

}  // namespace elmo
