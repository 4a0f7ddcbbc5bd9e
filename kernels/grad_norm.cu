// CUDA multi-tensor sum of squares: one block per fixed chunk of any buffer (one launch for
// all buffers), double partials, then one block adds the partials. Both reductions use a fixed
// tree, so the result is deterministic run to run.
#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/grad_norm.h"
#include "kernels/launchers.h"
#include "runtime/cuda_check.h"
#include "runtime/pinned.h"
#include "runtime/stream.h"

namespace elmo {

namespace {
constexpr int kThreads = 256;

struct DeviceChunk {
  const float* data;
  int64_t n;
};

// Fixed-order tree over the block's values in shared memory; result in slot 0.
__device__ double block_sum(double value, double* shared) {
  shared[threadIdx.x] = value;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) shared[threadIdx.x] += shared[threadIdx.x + stride];
    __syncthreads();
  }
  return shared[0];
}

__global__ void chunk_squares_kernel(const DeviceChunk* __restrict__ chunks,
                                     double* __restrict__ partial) {
  __shared__ double shared[kThreads];
  const DeviceChunk chunk = chunks[blockIdx.x];
  double sum = 0.0;
  for (int64_t e = threadIdx.x; e < chunk.n; e += blockDim.x) {
    const double x = chunk.data[e];
    sum += x * x;
  }
  const double total = block_sum(sum, shared);
  if (threadIdx.x == 0) partial[blockIdx.x] = total;
}

__global__ void add_partials_kernel(const double* __restrict__ partial, int64_t n,
                                    double* __restrict__ out) {
  __shared__ double shared[kThreads];
  double sum = 0.0;
  for (int64_t k = threadIdx.x; k < n; k += blockDim.x) sum += partial[k];
  const double total = block_sum(sum, shared);
  if (threadIdx.x == 0) *out = total;
}
}  // namespace

double sum_of_squares_cuda(const FloatSpan* buffers, int count, int device) {
  std::vector<DeviceChunk> chunks;
  for (int b = 0; b < count; ++b)
    for (int64_t start = 0; start < buffers[b].n; start += kSumSquaresChunk)
      chunks.push_back(
          {buffers[b].data + start, std::min<int64_t>(kSumSquaresChunk, buffers[b].n - start)});
  if (chunks.empty()) return 0.0;
  const Device dev = Device::cuda(device);
  const int64_t n_chunks = static_cast<int64_t>(chunks.size());
  ELMO_CHECK(n_chunks < (int64_t{1} << 31), "sum_of_squares: too many chunks (", n_chunks, ")");
  const int64_t table_bytes = n_chunks * static_cast<int64_t>(sizeof(DeviceChunk));
  // Pinned, asynchronous upload: the only host synchronisation is the result's read-back.
  Tensor table = Tensor::empty({table_bytes}, DType::kU8, dev);
  upload_to_device(device, table.data<uint8_t>(), chunks.data(), static_cast<size_t>(table_bytes));
  // Doubles as i64 storage (the Tensor runtime has no f64 dtype): partials [n_chunks], out [1].
  Tensor partial = Tensor::empty({n_chunks + 1}, DType::kI64, dev);
  double* partial_ptr = reinterpret_cast<double*>(partial.data<int64_t>());
  chunk_squares_kernel<<<static_cast<unsigned>(n_chunks), kThreads, 0, current_stream()>>>(
      reinterpret_cast<const DeviceChunk*>(table.data<uint8_t>()), partial_ptr);
  ELMO_CUDA_CHECK_LAUNCH();
  add_partials_kernel<<<1, kThreads, 0, current_stream()>>>(partial_ptr, n_chunks,
                                                            partial_ptr + n_chunks);
  ELMO_CUDA_CHECK_LAUNCH();
  Tensor host_out = partial.rows(n_chunks, n_chunks + 1).to(Device::cpu());
  double result = 0.0;
  std::memcpy(&result, host_out.data<int64_t>(), sizeof(double));
  return result;
}

}  // namespace elmo
