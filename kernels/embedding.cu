// CUDA embedding gather and deterministic per-unique-id gradient reduction:
// radix sort of (id, position) pairs (stable, so positions stay ascending within an id),
// run-length encoding into unique ids + counts, a scan into the offsets of a row-sum plan, then
// the planned row sum of kernels/row_sum.h (one thread per (unique id, column), rows in position
// order). No float atomics; bit-identical to the CPU twin.
#include <algorithm>
#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_run_length_encode.cuh>
#include <cub/device/device_scan.cuh>
#include <limits>

#include "kernels/embedding.h"
#include "kernels/launchers.h"
#include "kernels/row_sum.h"
#include "runtime/cuda_check.h"
#include "runtime/stream.h"

namespace elmo {

namespace {

constexpr int kThreads = 256;

__global__ void gather_kernel(const float* __restrict__ table, int64_t rows, int64_t dim,
                              const int32_t* __restrict__ ids, int64_t n, float* __restrict__ out,
                              long long* bad_position) {
  const int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= n * dim) return;
  const int64_t i = e / dim, c = e - i * dim;
  const int32_t id = ids[i];
  if (id < 0 || id >= rows) {
    out[e] = 0.0f;
    if (bad_position != nullptr && c == 0) atomicMin(bad_position, static_cast<long long>(i));
    return;
  }
  out[e] = table[static_cast<int64_t>(id) * dim + c];  // out[i, c] = table[ids[i], c]
}

__global__ void iota_and_check_kernel(const int32_t* __restrict__ ids, int64_t n, int64_t rows,
                                      int32_t* __restrict__ positions, long long* bad_position) {
  const int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (p >= n) return;
  positions[p] = static_cast<int32_t>(p);
  if (ids[p] < 0 || ids[p] >= rows) atomicMin(bad_position, static_cast<long long>(p));
}

unsigned blocks_for(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

}  // namespace

void embedding_gather_cuda(const float* table, int64_t rows, int64_t dim, const int32_t* ids,
                           int64_t n, float* out, int64_t* bad_position) {
  if (n == 0 || dim == 0) return;
  gather_kernel<<<blocks_for(n * dim), kThreads, 0, current_stream()>>>(
      table, rows, dim, ids, n, out, reinterpret_cast<long long*>(bad_position));
  ELMO_CUDA_CHECK_LAUNCH();
}

void embedding_backward_cuda(const RowGradSegment* segments, int num_segments, int64_t dim,
                             int64_t rows, int device, std::vector<int32_t>& unique_ids,
                             Tensor& values) {
  ELMO_CHECK(num_segments >= 1 && num_segments <= kMaxRowSumSegments,
             "embedding_backward: ", num_segments, " segments (1..", kMaxRowSumSegments,
             " on CUDA)");
  const Device dev = Device::cuda(device);
  cudaStream_t stream = current_stream();
  std::vector<RowSumSegment> inputs;
  std::vector<int64_t> begin;  // first global position of each segment
  int64_t total = 0;
  for (int s = 0; s < num_segments; ++s) {
    inputs.push_back({segments[s].dy, nullptr, segments[s].n});
    begin.push_back(total);
    total += segments[s].n;
  }
  ELMO_CHECK(total < std::numeric_limits<int32_t>::max(), "embedding_backward: ", total,
             " positions exceed the int32 positions of the CUDA sort");
  unique_ids.clear();
  if (total == 0) {
    values = Tensor::empty({0, dim}, DType::kF32, dev);
    return;
  }

  // ids of all segments, concatenated: [total]
  Tensor keys_in = Tensor::empty({total}, DType::kI32, dev);
  for (int s = 0; s < num_segments; ++s)
    if (segments[s].n > 0)
      ELMO_CUDA_CHECK(cudaMemcpyAsync(keys_in.data<int32_t>() + begin[s], segments[s].ids,
                                      segments[s].n * sizeof(int32_t), cudaMemcpyDeviceToDevice,
                                      stream));
  Tensor positions_in = Tensor::empty({total}, DType::kI32, dev);
  // [0] bad position (INT64_MAX = none), [1] number of unique ids
  Tensor host_flags = Tensor::empty({2}, DType::kI64);
  host_flags.data<int64_t>()[0] = std::numeric_limits<int64_t>::max();
  host_flags.data<int64_t>()[1] = 0;
  Tensor flags = host_flags.to(dev);
  long long* bad = reinterpret_cast<long long*>(flags.data<int64_t>());
  iota_and_check_kernel<<<blocks_for(total), kThreads, 0, stream>>>(
      keys_in.data<int32_t>(), total, rows, positions_in.data<int32_t>(), bad);
  ELMO_CUDA_CHECK_LAUNCH();

  Tensor keys_out = Tensor::empty({total}, DType::kI32, dev);
  Tensor positions_out = Tensor::empty({total}, DType::kI32, dev);
  Tensor unique = Tensor::empty({total}, DType::kI32, dev);
  // One more count (0) than runs can exist: the scan's last entry is offsets[n_unique] = total.
  Tensor counts = Tensor::zeros({total + 1}, DType::kI32, dev);
  Tensor offsets = Tensor::empty({total + 1}, DType::kI32, dev);
  int64_t* num_runs = flags.data<int64_t>() + 1;

  size_t sort_bytes = 0, rle_bytes = 0, scan_bytes = 0;
  const int n = static_cast<int>(total);
  ELMO_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(
      nullptr, sort_bytes, keys_in.data<int32_t>(), keys_out.data<int32_t>(),
      positions_in.data<int32_t>(), positions_out.data<int32_t>(), n, 0, 32, stream));
  ELMO_CUDA_CHECK(cub::DeviceRunLengthEncode::Encode(nullptr, rle_bytes, keys_out.data<int32_t>(),
                                                     unique.data<int32_t>(), counts.data<int32_t>(),
                                                     num_runs, n, stream));
  ELMO_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(nullptr, scan_bytes, counts.data<int32_t>(),
                                                offsets.data<int32_t>(), n + 1, stream));
  const size_t temp_bytes = std::max(sort_bytes, std::max(rle_bytes, scan_bytes));
  Tensor temp = Tensor::empty({static_cast<int64_t>(temp_bytes) + 1}, DType::kU8, dev);
  void* temp_ptr = temp.data<uint8_t>();
  size_t bytes = temp_bytes;
  ELMO_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(
      temp_ptr, bytes, keys_in.data<int32_t>(), keys_out.data<int32_t>(),
      positions_in.data<int32_t>(), positions_out.data<int32_t>(), n, 0, 32, stream));
  bytes = temp_bytes;
  ELMO_CUDA_CHECK(cub::DeviceRunLengthEncode::Encode(temp_ptr, bytes, keys_out.data<int32_t>(),
                                                     unique.data<int32_t>(), counts.data<int32_t>(),
                                                     num_runs, n, stream));
  bytes = temp_bytes;
  ELMO_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(temp_ptr, bytes, counts.data<int32_t>(),
                                                offsets.data<int32_t>(), n + 1, stream));

  host_flags.copy_from(flags);  // synchronises
  const int64_t bad_position = host_flags.data<int64_t>()[0];
  if (bad_position != std::numeric_limits<int64_t>::max()) {
    Tensor id = keys_in.rows(bad_position, bad_position + 1).to(Device::cpu());
    check_row_ids(id.data<int32_t>(), 1, rows, "embedding_backward");
    throw Error(str("embedding_backward: device reported a bad id at position ", bad_position));
  }
  const int64_t n_unique = host_flags.data<int64_t>()[1];

  values = Tensor::empty({n_unique, dim}, DType::kF32, dev);  // [|U|, dim]
  row_sum_by_plan_cuda(inputs.data(), num_segments, dim, offsets.data<int32_t>(),
                       positions_out.data<int32_t>(), n_unique, values.data<float>(), RowSumTail{});
  Tensor host_unique = unique.rows(0, n_unique).to(Device::cpu());
  unique_ids.assign(host_unique.data<int32_t>(), host_unique.data<int32_t>() + n_unique);
}

}  // namespace elmo
