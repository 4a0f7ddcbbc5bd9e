// CUDA fused LSTM cell: one thread per (row, column) element, the same ELMO_HD math as the CPU
// twin (lstmp_cell.h). Memory-bound: each thread reads 4 gate pre-activations and c_prev and
// writes c, m and (training) the activated gates and c_raw.
#include "kernels/lstmp_cell.h"
#include "runtime/cuda_check.h"
#include "runtime/stream.h"

namespace elmo {

namespace {
constexpr int kThreads = 256;

__global__ void lstmp_cell_forward_kernel(int64_t rows, int64_t cell, float cell_clip,
                                          const float* z,
                                          const float* __restrict__ c_prev, float* c, float* m,
                                          float* gates, float* c_raw) {
  const int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;  // b * C + j
  if (e >= rows * cell) return;
  const int64_t b = e / cell, j = e - b * cell;
  // gates may alias z: every element reads and writes only its own four positions.
  lstmp_cell_forward_at(cell, j, z + b * 4 * cell, c_prev ? c_prev[e] : 0.0f, cell_clip,
                        gates ? gates + b * 4 * cell : nullptr, c + e,
                        c_raw ? c_raw + e : nullptr, m + e);
}

__global__ void lstmp_cell_backward_kernel(int64_t rows, int64_t cell, float cell_clip,
                                           const float* gates, const float* __restrict__ c_prev,
                                           const float* __restrict__ c_raw,
                                           const float* __restrict__ dm, const float* dc_next,
                                           float* dz, float* dc_prev) {
  const int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= rows * cell) return;
  const int64_t b = e / cell, j = e - b * cell;
  const float dcp = lstmp_cell_backward_at(cell, j, gates + b * 4 * cell,
                                           c_prev ? c_prev[e] : 0.0f, c_raw[e], cell_clip, dm[e],
                                           dc_next ? dc_next[e] : 0.0f, dz + b * 4 * cell);
  if (dc_prev) dc_prev[e] = dcp;
}

unsigned blocks_for(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }
}  // namespace

void lstmp_cell_forward_cuda(int64_t rows, int64_t cell, float cell_clip, const float* z,
                             const float* c_prev, float* c, float* m, float* gates,
                             float* c_raw) {
  if (rows * cell == 0) return;
  lstmp_cell_forward_kernel<<<blocks_for(rows * cell), kThreads, 0, current_stream()>>>(
      rows, cell, cell_clip, z, c_prev, c, m, gates, c_raw);
  ELMO_CUDA_CHECK_LAUNCH();
}

void lstmp_cell_backward_cuda(int64_t rows, int64_t cell, float cell_clip, const float* gates,
                              const float* c_prev, const float* c_raw, const float* dm,
                              const float* dc_next, float* dz, float* dc_prev) {
  if (rows * cell == 0) return;
  lstmp_cell_backward_kernel<<<blocks_for(rows * cell), kThreads, 0, current_stream()>>>(
      rows, cell, cell_clip, gates, c_prev, c_raw, dm, dc_next, dz, dc_prev);
  ELMO_CUDA_CHECK_LAUNCH();
}

}  // namespace elmo
