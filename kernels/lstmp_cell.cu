// CUDA fused LSTM cell: one thread per (row, column) element, the same ELMO_HD math as the CPU
// twin (lstmp_cell.h). Memory-bound: each thread reads 4 gate pre-activations and c_prev and
// writes c, m and (training) the activated gates and c_raw.
#include "kernels/launchers.h"
#include "kernels/lstmp_cell.h"
#include "runtime/cuda_check.h"
#include "runtime/stream.h"

namespace elmo {

namespace {
constexpr int kThreads = 256;

__global__ void lstmp_cell_forward_kernel(int64_t rows, int64_t cell, float cell_clip,
                                          const float* z, const float* __restrict__ c_prev,
                                          float* c, float* m, float* gates, float* c_raw) {
  const int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;  // b * C + j
  if (e >= rows * cell) return;
  const int64_t b = e / cell, j = e - b * cell;
  const float* zi = z + b * 4 * cell + j;  // gate blocks at zi[0], zi[C], zi[2C], zi[3C]
  const LstmCellForward r = lstmp_cell_forward_math(zi[0], zi[cell], zi[2 * cell], zi[3 * cell],
                                                    c_prev ? c_prev[e] : 0.0f, cell_clip);
  c[e] = r.c;
  m[e] = r.m;
  if (c_raw) c_raw[e] = r.c_raw;
  if (gates) {  // may alias z: this thread has read its four positions already
    float* gi = gates + b * 4 * cell + j;
    gi[0] = r.i;
    gi[cell] = r.f;
    gi[2 * cell] = r.g;
    gi[3 * cell] = r.o;
  }
}

__global__ void lstmp_cell_backward_kernel(int64_t rows, int64_t cell, float cell_clip,
                                           const float* gates, const float* __restrict__ c_prev,
                                           const float* __restrict__ c_raw,
                                           const float* __restrict__ dm, const float* dc_next,
                                           float* dz, float* dc_prev) {
  const int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= rows * cell) return;
  const int64_t b = e / cell, j = e - b * cell;
  const float* gi = gates + b * 4 * cell + j;
  const LstmCellBackward r = lstmp_cell_backward_math(
      gi[0], gi[cell], gi[2 * cell], gi[3 * cell], c_prev ? c_prev[e] : 0.0f, c_raw[e],
      cell_clip, dm[e], dc_next ? dc_next[e] : 0.0f);
  float* dzi = dz + b * 4 * cell + j;  // may alias the gates: read above
  dzi[0] = r.dzi;
  dzi[cell] = r.dzf;
  dzi[2 * cell] = r.dzg;
  dzi[3 * cell] = r.dzo;
  if (dc_prev) dc_prev[e] = r.dc_prev;  // may alias dc_next: read above
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
