// Embedding rows: gather (forward) and per-unique-id gradient reduction (backward).
//
//   forward:  out[i, :] = table[ids[i], :]                       table [V, E], ids [n] -> [n, E]
//   backward: for every unique id u:  values[k(u), :] = sum_{i : ids[i] == u} dy[i, :]
//             unique ids ascending; the sum runs over positions i in increasing order
//             (sort by (id, position), then a segmented sum), so the result is deterministic
//             and the CPU and CUDA backends give bit-identical rows (no float atomics).
//
// Backward takes several (ids, dy) segments at once (e.g. the forward and the backward
// direction of the biLM read the same rows); positions count through the segments in order.
// An id outside [0, V) is an Error naming the id, its position and V.
// What it is not: a parameter or optimizer; the model wraps the result into SparseRows.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "runtime/tensor.h"

namespace elmo {

// One piece of the backward input: ids [n] and their output gradients dy [n, dim].
// CPU launchers need host pointers, CUDA launchers device pointers.
struct RowGradSegment {
  const int32_t* ids = nullptr;
  const float* dy = nullptr;
  int64_t n = 0;
};

// Host ids: throws Error naming the first id outside [0, rows) (`what` names the caller).
void check_row_ids(const int32_t* ids, int64_t n, int64_t rows, const char* what);

// ---- Forward: raw launchers ---------------------------------------------------------------
// CPU: ids are checked (Error on the first bad one) before anything is written.
void embedding_gather_cpu(const float* table, int64_t rows, int64_t dim, const int32_t* ids,
                          int64_t n, float* out);
// CUDA: device pointers. A bad id writes a zero row and records min(position) of bad ids
// into *bad_position (device int64, preset by the caller to INT64_MAX; may be null).
void embedding_gather_cuda(const float* table, int64_t rows, int64_t dim, const int32_t* ids,
                           int64_t n, float* out, int64_t* bad_position);

// Entry point: table f32 [V, E], ids i32 [n], out f32 [n, E], all on one device.
// On CUDA the range check reads one flag back (one stream synchronisation).
void embedding_gather(const Tensor& table, const Tensor& ids, Tensor& out);

// ---- Backward ------------------------------------------------------------------------------
// CPU: unique_ids gets the ascending unique ids, values becomes a new f32 [|U|, dim] CPU tensor.
void embedding_backward_cpu(const RowGradSegment* segments, int num_segments, int64_t dim,
                            int64_t rows, std::vector<int32_t>& unique_ids, Tensor& values);
// CUDA: segments hold device pointers (at most kMaxRowGradSegments); unique_ids comes back to
// the host (one synchronisation), values becomes a new f32 [|U|, dim] tensor on cuda:device.
constexpr int kMaxRowGradSegments = 8;
void embedding_backward_cuda(const RowGradSegment* segments, int num_segments, int64_t dim,
                             int64_t rows, int device, std::vector<int32_t>& unique_ids,
                             Tensor& values);

// Entry point over tensors: ids[k] i32 [n_k], dy[k] f32 [n_k, dim] (all on one device).
void embedding_backward(const std::vector<Tensor>& ids, const std::vector<Tensor>& dy, int64_t rows,
                        std::vector<int32_t>& unique_ids, Tensor& values);

// ---- Backward from a host-built plan ---------------------------------------------------------
// When the ids are on the host as well (the batch came from there), the sort runs on the host
// and the device only sums: no read-back, no synchronisation. Same sums, same order, so the
// values equal embedding_backward_{cpu,cuda}'s bit for bit.
struct RowSumPlan {
  std::vector<int32_t> unique_ids;  // [|U|] ascending
  std::vector<int32_t> offsets;     // [|U| + 1]: the rows of unique_ids[u] are
  std::vector<int32_t> positions;   // positions[offsets[u] .. offsets[u + 1]) (ascending) of the
                                    // segments concatenated in order; [total]
};

// host_ids: {ids, n} per segment, host memory. Throws Error naming the first id outside
// [0, rows) (as check_row_ids does).
void build_row_sum_plan(const std::vector<std::pair<const int32_t*, int64_t>>& host_ids,
                        int64_t rows, RowSumPlan& plan);

// values [n_unique, dim] (row u = sum of the dy rows at positions[offsets[u] .. offsets[u+1]) in
// that order, starting from 0). segments[s].dy: [n_s, dim] (ids unused). CPU: host pointers;
// CUDA: device pointers for dy, offsets, positions and values, at most kMaxRowGradSegments.
void row_sum_by_plan_cpu(const RowGradSegment* segments, int num_segments, int64_t dim,
                         const int32_t* offsets, const int32_t* positions, int64_t n_unique,
                         float* values);
void row_sum_by_plan_cuda(const RowGradSegment* segments, int num_segments, int64_t dim,
                          const int32_t* offsets, const int32_t* positions, int64_t n_unique,
                          float* values);

}  // namespace elmo
