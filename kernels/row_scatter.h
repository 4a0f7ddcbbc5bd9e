// Row scatter: writes rows into selected rows of a table, the inverse of embedding_gather.
//
//   table[ids[k], :] = rows[k, :]      table [V, dim], ids [n] (unique), rows [n, dim]
//
// Used by the distributed GPU ranks (app/data_parallel.cpp) to put tail rows fetched into the
// host working copy onto the device table, and to place the hot gradient rows into the dense
// all-reduce bucket. Ids must be unique (a repeated id would race on the device) and in range:
// the CPU twin checks the range, the CUDA one trusts the caller (ids come from checked lists).
// What it is not: an accumulate (no +=) or a gather (kernels/embedding.h).
#pragma once

#include <cstdint>

#include "runtime/dtype.h"

namespace elmo {

// Entry point: all pointers on `device`. CPU: throws Error naming the first id outside
// [0, table_rows) before writing; CUDA: launched on the current stream, ids trusted.
void scatter_rows(Device device, float* table, int64_t table_rows, int64_t dim, const int32_t* ids,
                  int64_t n, const float* rows);

}  // namespace elmo
