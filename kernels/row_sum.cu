// CUDA planned row sums: one thread per (output row, column), each summing its rows in plan
// order with explicitly rounded operations, so the result equals the CPU twin's bit for bit.
// See row_sum.h.
#include <algorithm>

#include "kernels/launchers.h"
#include "kernels/row_sum.h"
#include "runtime/cuda_check.h"
#include "runtime/stream.h"

namespace elmo {

namespace {

constexpr int kThreads = 256;

struct SegmentTable {
  const float* rows[kMaxRowSumSegments];
  const float* scale[kMaxRowSumSegments];
  int64_t begin[kMaxRowSumSegments + 1];  // first global position of each segment
  int count;
};

// Block = one output row (x) times a slice of up to 256 columns (y).
__global__ void row_sum_kernel(SegmentTable segments, int64_t dim,
                               const int32_t* __restrict__ offsets,
                               const int32_t* __restrict__ positions, RowSumTail tail,
                               float* __restrict__ values) {
  const int64_t u = blockIdx.x;
  const int64_t c = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x;
  if (c >= dim) return;
  float sum = 0.0f;
  for (int32_t k = offsets[u]; k < offsets[u + 1]; ++k) {
    const int64_t p = positions[k];
    int s = 0;
    while (s + 1 < segments.count && p >= segments.begin[s + 1]) ++s;
    const int64_t r = p - segments.begin[s];
    const float x = segments.rows[s][r * dim + c];
    sum =
        segments.scale[s] ? __fadd_rn(sum, __fmul_rn(segments.scale[s][r], x)) : __fadd_rn(sum, x);
  }
  const int32_t j = tail.index ? tail.index[u] : -1;
  if (j >= 0) {
    const int64_t at = static_cast<int64_t>(j) * dim + c;
    sum = __fadd_rn(sum, tail.values ? tail.values[at] : static_cast<float>(tail.values_f64[at]));
  }
  values[u * dim + c] = sum;
}

}  // namespace

void row_sum_by_plan_cuda(const RowSumSegment* segments, int num_segments, int64_t dim,
                          const int32_t* offsets, const int32_t* positions, int64_t n_out,
                          float* values, const RowSumTail& tail) {
  ELMO_CHECK(num_segments <= kMaxRowSumSegments, "row_sum_by_plan: ", num_segments,
             " segments (at most ", kMaxRowSumSegments, " on CUDA)");
  ELMO_CHECK(n_out < (int64_t{1} << 31), "row_sum_by_plan: ", n_out, " output rows");
  if (n_out == 0 || dim == 0) return;
  SegmentTable table{};
  table.count = num_segments;
  int64_t total = 0;
  for (int s = 0; s < num_segments; ++s) {
    table.rows[s] = segments[s].rows;
    table.scale[s] = segments[s].scale;
    table.begin[s] = total;
    total += segments[s].n;
  }
  table.begin[num_segments] = total;
  const int threads = static_cast<int>(std::min<int64_t>(kThreads, (dim + 31) / 32 * 32));
  const dim3 grid(static_cast<unsigned>(n_out),
                  static_cast<unsigned>((dim + threads - 1) / threads));
  row_sum_kernel<<<grid, threads, 0, current_stream()>>>(table, dim, offsets, positions, tail,
                                                         values);
  ELMO_CUDA_CHECK_LAUNCH();
}

}  // namespace elmo
