// Inverted dropout with counter-based random numbers.
//
//   keep[e] = philox_uniform(seed, stream, e) >= p          (e = flat element index)
//   y[e]    = keep[e] ? x[e] / (1 - p) : 0                   forward
//   dx[e]   = keep[e] ? dy[e] / (1 - p) : 0                  backward
//
// The mask is a pure function of (seed, stream, e), so the CPU and CUDA backends drop the same
// elements, and backward recomputes the mask instead of storing it. Callers give each dropout
// site of each step its own stream id (see dropout_stream()).
//
// Row shards: a rank that holds rows [row_offset, row_offset + rows) of a time-major batch
// [T, global_rows, D] passes that layout, and e becomes the element's index in the global
// tensor, so N ranks with B/N rows each drop exactly the elements one rank with B rows drops.
#pragma once

#include <cstdint>

#include "runtime/hd.h"
#include "runtime/philox.h"
#include "runtime/tensor.h"

namespace elmo {

// Stream id of one dropout site at one training step: unique for (step, site < 2^16).
ELMO_HD uint64_t dropout_stream(uint64_t step, uint32_t site) {
  return (step << 16) | static_cast<uint64_t>(site & 0xFFFFu);
}

ELMO_HD float dropout_scale_at(uint64_t seed, uint64_t stream, uint64_t e, float p, float scale) {
  return philox_uniform(seed, stream, e) >= p ? scale : 0.0f;
}

// Where a local [T, rows, D] tensor sits in the global [T, global_rows, D] one. rows == 0
// (the default) means local == global: e is the flat local index.
struct DropoutRows {
  int64_t rows = 0;         // rows per time step held here
  int64_t global_rows = 0;  // rows per time step over all ranks
  int64_t row_offset = 0;   // first global row held here
  int64_t dim = 0;          // D, elements per row
};

struct DropoutParams {
  float p = 0.0f;  // probability of dropping, in [0, 1)
  uint64_t seed = 0;
  uint64_t stream = 0;
  DropoutRows layout;
};

// Global mask index of local element e.
ELMO_HD uint64_t dropout_global_index(int64_t e, const DropoutRows& layout) {
  if (layout.rows == 0) return static_cast<uint64_t>(e);
  const int64_t row = e / layout.dim, d = e - row * layout.dim;
  const int64_t t = row / layout.rows, b = row - t * layout.rows;
  return static_cast<uint64_t>((t * layout.global_rows + layout.row_offset + b) * layout.dim + d);
}

// Entry points: y = dropout(x) on `device` (pointers there) or on the tensors' device; y may be
// x (in place). Backward is the same map applied to dy.
void dropout(Device device, const float* x, float* y, int64_t n, const DropoutParams& params);
void dropout(const Tensor& x, Tensor& y, const DropoutParams& params);

}  // namespace elmo
