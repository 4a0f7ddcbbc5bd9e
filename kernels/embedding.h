// Embedding rows: gather (forward) and per-unique-id gradient reduction (backward).
//
//   forward:  out[i, :] = table[ids[i], :]                       table [V, E], ids [n] -> [n, E]
//   backward: for every unique id u:  values[k(u), :] = sum_{i : ids[i] == u} dy[i, :]
//             unique ids ascending; the sum runs over positions i in increasing order
//             (sort by (id, position), then the planned row sum of kernels/row_sum.h), so the
//             result is deterministic and the CPU and CUDA backends give bit-identical rows (no
//             float atomics).
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

// Host ids: throws Error naming the first id outside [0, rows) (`what` names the caller).
void check_row_ids(const int32_t* ids, int64_t n, int64_t rows, const char* what);

// ---- Forward ---------------------------------------------------------------------------------
// Entry point over pointers on `device`: out [n, dim] = table [rows, dim] rows ids [n]. CPU: the
// ids are checked first (Error naming the first bad one). CUDA: the ids are trusted (the caller
// checked its host copy; a bad id would give a zero row), no synchronisation.
void embedding_gather(Device device, const float* table, int64_t rows, int64_t dim,
                      const int32_t* ids, int64_t n, float* out);
// Entry point over tensors: table f32 [V, E], ids i32 [n], out f32 [n, E], all on one device.
// Every id is checked on both backends: on CUDA the kernel flags a bad id and one flag is read
// back (one stream synchronisation).
void embedding_gather(const Tensor& table, const Tensor& ids, Tensor& out);

// ---- Backward --------------------------------------------------------------------------------
// Entry point over tensors: ids[k] i32 [n_k], dy[k] f32 [n_k, dim] (all on one device). CPU: the
// plan of kernels/row_sum.h built on the host, then its sum. CUDA: the same plan built by a
// device radix sort (at most kMaxRowSumSegments segments), then the same sum; unique_ids comes
// back to the host (one synchronisation). values becomes a new f32 [|U|, dim] tensor on the
// inputs' device. When the ids are on the host anyway, build_row_sum_plan + row_sum_by_plan
// (kernels/row_sum.h) give the same values without a read-back.
void embedding_backward(const std::vector<Tensor>& ids, const std::vector<Tensor>& dy, int64_t rows,
                        std::vector<int32_t>& unique_ids, Tensor& values);

}  // namespace elmo
