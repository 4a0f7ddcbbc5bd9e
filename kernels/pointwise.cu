// CUDA side of kernels/pointwise.h: grid-stride elementwise kernels, kColumnSumLanes threads per
// column for the column sums (the lane order of pointwise.h, as the CPU), one fixed-tree block
// for sum_to_double.
#include "kernels/launchers.h"
#include "kernels/lstmp_cell.h"
#include "kernels/pointwise.h"
#include "runtime/cuda_check.h"
#include "runtime/stream.h"

namespace elmo {

namespace {

constexpr int kThreads = 256;

unsigned blocks_for(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < (int64_t{1} << 30) ? blocks : (int64_t{1} << 30));
}

__device__ int64_t first_index() { return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ int64_t grid_stride() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

__global__ void fill_kernel(float* __restrict__ x, int64_t n, float value) {
  for (int64_t e = first_index(); e < n; e += grid_stride()) x[e] = value;
}

__global__ void broadcast_rows_kernel(const float* __restrict__ row, int64_t dim, int64_t n,
                                      float* __restrict__ out) {
  for (int64_t e = first_index(); e < n; e += grid_stride()) out[e] = row[e % dim];
}

__global__ void clip_kernel(const float* x, float* y, int64_t n, float limit) {
  for (int64_t e = first_index(); e < n; e += grid_stride()) y[e] = clip_symmetric(x[e], limit);
}

__global__ void mask_clip_grad_kernel(float* g, const float* __restrict__ x, int64_t n,
                                      float limit) {
  for (int64_t e = first_index(); e < n; e += grid_stride())
    g[e] = __fmul_rn(g[e], clip_pass(x[e], limit));
}

__global__ void add_kernel(const float* a, const float* b, float* out, int64_t n) {
  for (int64_t e = first_index(); e < n; e += grid_stride()) out[e] = __fadd_rn(a[e], b[e]);
}

constexpr int kColumnTile = 32;  // columns per block: a warp reads 32 consecutive floats of a row

__device__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ double add_rn(double a, double b) { return __dadd_rn(a, b); }

// Block (kColumnTile, kColumnSumLanes): thread (c, l) sums rows l, l + L, ... of column
// tile * 32 + c; the lanes are then combined by halving in shared memory (pointwise.h's order).
template <typename Acc>
__global__ void column_sums_kernel(const float* __restrict__ x, int64_t rows, int64_t cols,
                                   int64_t ld, Acc* __restrict__ out) {
  __shared__ Acc partial[kColumnSumLanes][kColumnTile + 1];  // +1: no bank conflicts
  const int c = threadIdx.x, lane = threadIdx.y;
  for (int64_t j0 = static_cast<int64_t>(blockIdx.x) * kColumnTile; j0 < cols;
       j0 += static_cast<int64_t>(gridDim.x) * kColumnTile) {  // uniform over the block
    const int64_t j = j0 + c;
    Acc acc = 0;
    if (j < cols)
      for (int64_t r = lane; r < rows; r += kColumnSumLanes)
        acc = add_rn(acc, static_cast<Acc>(x[r * ld + j]));
    partial[lane][c] = acc;
    __syncthreads();
    for (int half = kColumnSumLanes / 2; half > 0; half /= 2) {
      if (lane < half) partial[lane][c] = add_rn(partial[lane][c], partial[lane + half][c]);
      __syncthreads();
    }
    if (lane == 0 && j < cols) out[j] = add_rn(out[j], partial[0][c]);
    __syncthreads();  // partial is rewritten by the next tile
  }
}

unsigned column_tiles_for(int64_t cols) {
  const int64_t tiles = (cols + kColumnTile - 1) / kColumnTile;
  return static_cast<unsigned>(tiles < (int64_t{1} << 30) ? tiles : (int64_t{1} << 30));
}

__global__ void add_scaled_table_rows_kernel(float* __restrict__ out,
                                             const float* __restrict__ scale,
                                             const float* __restrict__ table,
                                             const int32_t* __restrict__ ids, int64_t n,
                                             int64_t dim) {
  for (int64_t e = first_index(); e < n * dim; e += grid_stride()) {
    const int64_t r = e / dim, d = e - r * dim;
    const float w = table[static_cast<int64_t>(ids[r]) * dim + d];
    out[e] = __fadd_rn(out[e], __fmul_rn(scale[r], w));
  }
}

__global__ void sum_to_double_kernel(const float* __restrict__ x, int64_t n,
                                     double* __restrict__ out) {
  __shared__ double shared[kThreads];
  double sum = 0.0;
  for (int64_t e = threadIdx.x; e < n; e += blockDim.x) sum += static_cast<double>(x[e]);
  shared[threadIdx.x] = sum;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) shared[threadIdx.x] += shared[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) *out = shared[0];
}

// Same rounding as float_to_bf16_bits (kernels/pointwise_cpu.cpp), written on the bits so
// both backends agree exactly, NaN payloads included.
__global__ void to_bf16_bits_kernel(const float* __restrict__ x, uint16_t* __restrict__ y,
                                    int64_t n) {
  for (int64_t e = first_index(); e < n; e += grid_stride()) {
    uint32_t bits = __float_as_uint(x[e]);
    if ((bits & 0x7fffffffu) > 0x7f800000u) {
      y[e] = static_cast<uint16_t>((bits >> 16) | 0x40u);
    } else {
      bits += 0x7fffu + ((bits >> 16) & 1u);
      y[e] = static_cast<uint16_t>(bits >> 16);
    }
  }
}

__global__ void from_bf16_bits_kernel(const uint16_t* __restrict__ x, float* __restrict__ y,
                                      int64_t n) {
  for (int64_t e = first_index(); e < n; e += grid_stride())
    y[e] = __uint_as_float(static_cast<uint32_t>(x[e]) << 16);
}

}  // namespace

void floats_to_bf16_cuda(const float* x, uint16_t* y, int64_t n) {
  if (n <= 0) return;
  to_bf16_bits_kernel<<<blocks_for(n), kThreads, 0, current_stream()>>>(x, y, n);
  ELMO_CUDA_CHECK_LAUNCH();
}

void bf16_to_floats_cuda(const uint16_t* x, float* y, int64_t n) {
  if (n <= 0) return;
  from_bf16_bits_kernel<<<blocks_for(n), kThreads, 0, current_stream()>>>(x, y, n);
  ELMO_CUDA_CHECK_LAUNCH();
}

void fill_floats_cuda(float* x, int64_t n, float value) {
  if (n <= 0) return;
  fill_kernel<<<blocks_for(n), kThreads, 0, current_stream()>>>(x, n, value);
  ELMO_CUDA_CHECK_LAUNCH();
}

void broadcast_rows_cuda(const float* row, int64_t dim, int64_t rows, float* out) {
  const int64_t n = rows * dim;
  if (n <= 0) return;
  broadcast_rows_kernel<<<blocks_for(n), kThreads, 0, current_stream()>>>(row, dim, n, out);
  ELMO_CUDA_CHECK_LAUNCH();
}

void clip_values_cuda(const float* x, float* y, int64_t n, float limit) {
  if (n <= 0) return;
  clip_kernel<<<blocks_for(n), kThreads, 0, current_stream()>>>(x, y, n, limit);
  ELMO_CUDA_CHECK_LAUNCH();
}

void mask_clip_grad_cuda(float* g, const float* x, int64_t n, float limit) {
  if (n <= 0) return;
  mask_clip_grad_kernel<<<blocks_for(n), kThreads, 0, current_stream()>>>(g, x, n, limit);
  ELMO_CUDA_CHECK_LAUNCH();
}

void add_floats_cuda(const float* a, const float* b, float* out, int64_t n) {
  if (n <= 0) return;
  add_kernel<<<blocks_for(n), kThreads, 0, current_stream()>>>(a, b, out, n);
  ELMO_CUDA_CHECK_LAUNCH();
}

void column_sums_add_cuda(const float* x, int64_t rows, int64_t cols, int64_t ld, float* out) {
  if (rows <= 0 || cols <= 0) return;
  const dim3 block(kColumnTile, kColumnSumLanes);
  column_sums_kernel<float>
      <<<column_tiles_for(cols), block, 0, current_stream()>>>(x, rows, cols, ld, out);
  ELMO_CUDA_CHECK_LAUNCH();
}

void column_sums_add_f64_cuda(const float* x, int64_t rows, int64_t cols, int64_t ld,
                              double* out) {
  if (rows <= 0 || cols <= 0) return;
  const dim3 block(kColumnTile, kColumnSumLanes);
  column_sums_kernel<double>
      <<<column_tiles_for(cols), block, 0, current_stream()>>>(x, rows, cols, ld, out);
  ELMO_CUDA_CHECK_LAUNCH();
}

void add_scaled_table_rows_cuda(float* out, const float* scale, const float* table,
                                const int32_t* ids, int64_t n, int64_t dim) {
  if (n <= 0 || dim <= 0) return;
  add_scaled_table_rows_kernel<<<blocks_for(n * dim), kThreads, 0, current_stream()>>>(
      out, scale, table, ids, n, dim);
  ELMO_CUDA_CHECK_LAUNCH();
}

void sum_to_double_cuda(const float* x, int64_t n, double* out) {
  sum_to_double_kernel<<<1, kThreads, 0, current_stream()>>>(x, n > 0 ? n : 0, out);
  ELMO_CUDA_CHECK_LAUNCH();
}

}  // namespace elmo
