// The CUDA launchers in a CPU-only build (-DELMO_CUDA=OFF, or configured where no CUDA toolkit
// was found): built instead of the .cu files, so the entry points (kernels/<op>_cpu.cpp) link
// unchanged. They are never reached through the entry points - no CUDA tensor or device pointer
// can exist in such a binary (runtime/no_cuda.cpp refuses every allocation) - and each refuses
// with the same UsageError, naming the op, if called directly.
#include "kernels/launchers.h"
#include "kernels/lstmp_persistent.h"
#include "runtime/cuda_memory.h"

namespace elmo {

void adagrad_dense_cuda(float*, float*, const float*, int64_t, float, float, float) {
  throw_cpu_only_build("adagrad_dense on CUDA");
}
void adagrad_rows_cuda(float*, float*, int64_t, const int32_t*, const float*, int64_t, float, float,
                       float) {
  throw_cpu_only_build("adagrad_rows on CUDA");
}
void sgd_dense_cuda(float*, const float*, int64_t, float, float) {
  throw_cpu_only_build("sgd_dense on CUDA");
}
void sgd_rows_cuda(float*, int64_t, const int32_t*, const float*, int64_t, float, float) {
  throw_cpu_only_build("sgd_rows on CUDA");
}
void dropout_cuda(const float*, float*, int64_t, const DropoutParams&) {
  throw_cpu_only_build("dropout on CUDA");
}
void embedding_gather_cuda(const float*, int64_t, int64_t, const int32_t*, int64_t, float*,
                           int64_t*) {
  throw_cpu_only_build("embedding_gather on CUDA");
}
void embedding_backward_cuda(const RowGradSegment*, int, int64_t, int64_t, int,
                             std::vector<int32_t>&, Tensor&) {
  throw_cpu_only_build("embedding_backward on CUDA");
}
void row_sum_by_plan_cuda(const RowSumSegment*, int, int64_t, const int32_t*, const int32_t*,
                          int64_t, float*, const RowSumTail&) {
  throw_cpu_only_build("row_sum_by_plan on CUDA");
}
void full_softmax_chunk_lse_cuda(const float*, int64_t, const float*, const int32_t*, int64_t,
                                 int64_t, int64_t, float*, double*, float*) {
  throw_cpu_only_build("full_softmax_chunk_lse on CUDA");
}
void full_softmax_chunk_grad_cuda(float*, int64_t, const float*, const int32_t*, const float*,
                                  int64_t, int64_t, int64_t, float) {
  throw_cpu_only_build("full_softmax_chunk_grad on CUDA");
}
void full_softmax_finish_cuda(const float*, const double*, const float*, const int32_t*, int64_t,
                              float*, double*, double*) {
  throw_cpu_only_build("full_softmax_finish on CUDA");
}
double sum_of_squares_cuda(const FloatSpan*, int, int) {
  throw_cpu_only_build("sum_of_squares on CUDA");
}
void lstmp_cell_forward_cuda(int64_t, int64_t, float, const float*, const float*, float*, float*,
                             float*, float*) {
  throw_cpu_only_build("lstmp_cell_forward on CUDA");
}
void lstmp_cell_backward_cuda(int64_t, int64_t, float, const float*, const float*, const float*,
                              const float*, const float*, float*, float*) {
  throw_cpu_only_build("lstmp_cell_backward on CUDA");
}
void lstmp_persistent_forward_cuda(const LstmpPersistentPlan&, const LstmpForwardArgs&) {
  throw_cpu_only_build("lstmp_persistent_forward on CUDA");
}
void lstmp_persistent_backward_cuda(const LstmpPersistentPlan&, const LstmpBackwardArgs&) {
  throw_cpu_only_build("lstmp_persistent_backward on CUDA");
}
LstmpDeviceLimits lstmp_persistent_device_limits(int device) {
  throw_cpu_only_build(str("the limits of cuda:", device).c_str());
}
std::string lstmp_persistent_supported(int64_t, int64_t, int) { return kCpuOnlyBuildMessage; }
void fill_floats_cuda(float*, int64_t, float) { throw_cpu_only_build("fill_floats on CUDA"); }
void floats_to_bf16_cuda(const float*, uint16_t*, int64_t) {
  throw_cpu_only_build("floats_to_bf16 on CUDA");
}
void bf16_to_floats_cuda(const uint16_t*, float*, int64_t) {
  throw_cpu_only_build("bf16_to_floats on CUDA");
}
void broadcast_rows_cuda(const float*, int64_t, int64_t, float*) {
  throw_cpu_only_build("broadcast_rows on CUDA");
}
void clip_values_cuda(const float*, float*, int64_t, float) {
  throw_cpu_only_build("clip_values on CUDA");
}
void mask_clip_grad_cuda(float*, const float*, int64_t, float) {
  throw_cpu_only_build("mask_clip_grad on CUDA");
}
void add_floats_cuda(const float*, const float*, float*, int64_t) {
  throw_cpu_only_build("add_floats on CUDA");
}
void column_sums_add_cuda(const float*, int64_t, int64_t, int64_t, float*) {
  throw_cpu_only_build("column_sums_add on CUDA");
}
void column_sums_add_f64_cuda(const float*, int64_t, int64_t, int64_t, double*) {
  throw_cpu_only_build("column_sums_add_f64 on CUDA");
}
void add_scaled_table_rows_cuda(float*, const float*, const float*, const int32_t*, int64_t,
                                int64_t) {
  throw_cpu_only_build("add_scaled_table_rows on CUDA");
}
void sum_to_double_cuda(const float*, int64_t, double*) {
  throw_cpu_only_build("sum_to_double on CUDA");
}
void scatter_rows_cuda(float*, int64_t, const int32_t*, int64_t, const float*) {
  throw_cpu_only_build("scatter_rows on CUDA");
}
void sampled_softmax_target_logits_cuda(const float*, const float*, const float*, const int32_t*,
                                        int64_t, int64_t, int64_t, int64_t, float*,
                                        const int32_t*) {
  throw_cpu_only_build("sampled_softmax_target_logits on CUDA");
}
void sampled_softmax_rows_cuda(float*, float*, const float*, const int32_t*, const int32_t*, float*,
                               const SampledSoftmaxRowsParams&) {
  throw_cpu_only_build("sampled_softmax_rows on CUDA");
}
void sampled_softmax_corrections_cuda(const float*, const int32_t*, const float*, int64_t, float*) {
  throw_cpu_only_build("sampled_softmax_corrections on CUDA");
}

}  // namespace elmo
