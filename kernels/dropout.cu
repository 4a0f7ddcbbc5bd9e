// CUDA dropout: one thread per element, the same Philox draw as the CPU twin.
#include "kernels/dropout.h"
#include "kernels/launchers.h"
#include "runtime/cuda_check.h"
#include "runtime/stream.h"

namespace elmo {

namespace {
// y may be x (the stack applies dropout in place): no __restrict__ on either, which would
// promise the compiler that they never alias (and let it read x through the non-coherent
// cache while y is written).
__global__ void dropout_kernel(const float* x, float* y, int64_t n, float p, float scale,
                               uint64_t seed, uint64_t stream, DropoutRows layout) {
  const int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e < n)
    y[e] = x[e] * dropout_scale_at(seed, stream, dropout_global_index(e, layout), p, scale);
}

// Only launched when x != y (and callers never pass partly overlapping buffers).
__global__ void copy_kernel(const float* __restrict__ x, float* __restrict__ y, int64_t n) {
  const int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e < n) y[e] = x[e];
}
}  // namespace

void dropout_cuda(const float* x, float* y, int64_t n, const DropoutParams& params) {
  if (n == 0) return;
  const int threads = 256;
  const unsigned blocks = static_cast<unsigned>((n + threads - 1) / threads);
  if (params.p <= 0.0f) {
    if (x != y) copy_kernel<<<blocks, threads, 0, current_stream()>>>(x, y, n);
  } else {
    dropout_kernel<<<blocks, threads, 0, current_stream()>>>(
        x, y, n, params.p, 1.0f / (1.0f - params.p), params.seed, params.stream, params.layout);
  }
  ELMO_CUDA_CHECK_LAUNCH();
}

}  // namespace elmo
