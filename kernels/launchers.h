// The raw launchers behind the ops' entry points: `<op>_cpu` (host pointers; the reference) and
// `<op>_cuda` (device pointers, the current stream of the current device). PRIVATE to kernels/:
// every other library calls the entry points in kernels/<op>.h, which take a Device (or tensors)
// and pick the backend. Only kernels/*.{cpp,cu} and tests/kernels/ include this header (the
// test kernels_launchers_stay_private checks it).
//
// Each declaration's semantics are those of its entry point (see the op's header); what is
// said here is only what differs between the two backends. In a CPU-only build (-DELMO_CUDA=OFF)
// the `_cuda` launchers are defined by kernels/no_cuda.cpp and throw UsageError.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/dropout.h"
#include "kernels/full_softmax.h"
#include "kernels/grad_norm.h"
#include "kernels/lstmp_persistent.h"
#include "kernels/row_sum.h"
#include "kernels/sampled_softmax.h"
#include "runtime/tensor.h"

namespace elmo {

// ---- adagrad.h ------------------------------------------------------------------------------
void adagrad_dense_cpu(float* p, float* acc, const float* g, int64_t n, float lr, float eps,
                       float grad_scale);
void adagrad_dense_cuda(float* p, float* acc, const float* g, int64_t n, float lr, float eps,
                        float grad_scale);
void adagrad_rows_cpu(float* table, float* acc, int64_t dim, const int32_t* ids,
                      const float* grad_rows, int64_t n_ids, float lr, float eps, float grad_scale);
void adagrad_rows_cuda(float* table, float* acc, int64_t dim, const int32_t* ids,
                       const float* grad_rows, int64_t n_ids, float lr, float eps,
                       float grad_scale);

// ---- sgd.h ----------------------------------------------------------------------------------
void sgd_dense_cpu(float* p, const float* g, int64_t n, float lr, float grad_scale);
void sgd_dense_cuda(float* p, const float* g, int64_t n, float lr, float grad_scale);
void sgd_rows_cpu(float* table, int64_t dim, const int32_t* ids, const float* grad_rows,
                  int64_t n_ids, float lr, float grad_scale);
void sgd_rows_cuda(float* table, int64_t dim, const int32_t* ids, const float* grad_rows,
                   int64_t n_ids, float lr, float grad_scale);

// ---- dropout.h ------------------------------------------------------------------------------
void dropout_cpu(const float* x, float* y, int64_t n, const DropoutParams& params);
void dropout_cuda(const float* x, float* y, int64_t n, const DropoutParams& params);

// ---- embedding.h ----------------------------------------------------------------------------
// CPU: ids are checked (Error on the first bad one) before anything is written.
void embedding_gather_cpu(const float* table, int64_t rows, int64_t dim, const int32_t* ids,
                          int64_t n, float* out);
// CUDA: a bad id writes a zero row and records min(position) of bad ids into *bad_position
// (device int64, preset by the caller to INT64_MAX; may be null).
void embedding_gather_cuda(const float* table, int64_t rows, int64_t dim, const int32_t* ids,
                           int64_t n, float* out, int64_t* bad_position);

// One piece of the backward input: ids [n] and their output gradients dy [n, dim].
struct RowGradSegment {
  const int32_t* ids = nullptr;
  const float* dy = nullptr;
  int64_t n = 0;
};
// CPU: unique_ids gets the ascending unique ids, values becomes a new f32 [|U|, dim] CPU tensor.
void embedding_backward_cpu(const RowGradSegment* segments, int num_segments, int64_t dim,
                            int64_t rows, std::vector<int32_t>& unique_ids, Tensor& values);
// CUDA: device pointers (at most kMaxRowSumSegments segments); the ids are sorted on the device
// and unique_ids comes back to the host (one synchronisation); values becomes a new f32
// [|U|, dim] tensor on cuda:device.
void embedding_backward_cuda(const RowGradSegment* segments, int num_segments, int64_t dim,
                             int64_t rows, int device, std::vector<int32_t>& unique_ids,
                             Tensor& values);

// ---- row_sum.h ------------------------------------------------------------------------------
void row_sum_by_plan_cpu(const RowSumSegment* segments, int num_segments, int64_t dim,
                         const int32_t* offsets, const int32_t* positions, int64_t n_out,
                         float* values, const RowSumTail& tail);
// CUDA: at most kMaxRowSumSegments segments, n_out < 2^31.
void row_sum_by_plan_cuda(const RowSumSegment* segments, int num_segments, int64_t dim,
                          const int32_t* offsets, const int32_t* positions, int64_t n_out,
                          float* values, const RowSumTail& tail);

// ---- full_softmax.h -------------------------------------------------------------------------
void full_softmax_chunk_lse_cpu(const float* logits, int64_t ld, const float* bias,
                                const int32_t* targets, int64_t rows, int64_t chunk, int64_t begin,
                                float* row_max, double* row_sum, float* target_logit);
void full_softmax_chunk_lse_cuda(const float* logits, int64_t ld, const float* bias,
                                 const int32_t* targets, int64_t rows, int64_t chunk, int64_t begin,
                                 float* row_max, double* row_sum, float* target_logit);
void full_softmax_chunk_grad_cpu(float* logits, int64_t ld, const float* bias,
                                 const int32_t* targets, const float* lse, int64_t rows,
                                 int64_t chunk, int64_t begin, float grad_scale);
void full_softmax_chunk_grad_cuda(float* logits, int64_t ld, const float* bias,
                                  const int32_t* targets, const float* lse, int64_t rows,
                                  int64_t chunk, int64_t begin, float grad_scale);
// CPU: the NLL summed sequentially in row order; CUDA: one block, a fixed tree (the two differ
// in the last bits of result[0]).
void full_softmax_finish_cpu(const float* row_max, const double* row_sum, const float* target_logit,
                             const int32_t* targets, int64_t rows, float* lse, double* result,
                             double* row_nll);
void full_softmax_finish_cuda(const float* row_max, const double* row_sum,
                              const float* target_logit, const int32_t* targets, int64_t rows,
                              float* lse, double* result, double* row_nll);

// ---- grad_norm.h ----------------------------------------------------------------------------
double sum_of_squares_cpu(const FloatSpan* buffers, int count);
// Device buffers (pointers on cuda:device); returns to the host (one synchronisation).
double sum_of_squares_cuda(const FloatSpan* buffers, int count, int device);

// ---- lstmp_cell.h ---------------------------------------------------------------------------
void lstmp_cell_forward_cpu(int64_t rows, int64_t cell, float cell_clip, const float* z,
                            const float* c_prev, float* c, float* m, float* gates, float* c_raw);
void lstmp_cell_forward_cuda(int64_t rows, int64_t cell, float cell_clip, const float* z,
                             const float* c_prev, float* c, float* m, float* gates, float* c_raw);
void lstmp_cell_backward_cpu(int64_t rows, int64_t cell, float cell_clip, const float* gates,
                             const float* c_prev, const float* c_raw, const float* dm,
                             const float* dc_next, float* dz, float* dc_prev);
void lstmp_cell_backward_cuda(int64_t rows, int64_t cell, float cell_clip, const float* gates,
                              const float* c_prev, const float* c_raw, const float* dm,
                              const float* dc_next, float* dz, float* dc_prev);

// ---- lstmp_persistent.h ---------------------------------------------------------------------
// CUDA: one cooperative launch each; throws elmo::Error with the plan's reason if !plan.ok(),
// and on any launch precondition.
void lstmp_persistent_forward_cuda(const LstmpPersistentPlan& plan, const LstmpForwardArgs& a);
void lstmp_persistent_backward_cuda(const LstmpPersistentPlan& plan, const LstmpBackwardArgs& a);
// CPU twins (`scratch` is unused and may be nullptr). round_bf16 = false skips every bf16
// rounding (an fp32 run of the same algorithm, for finite-difference checks).
void lstmp_persistent_forward_cpu(const LstmpPersistentPlan& plan, const LstmpForwardArgs& a,
                                  bool round_bf16 = true);
void lstmp_persistent_backward_cpu(const LstmpPersistentPlan& plan, const LstmpBackwardArgs& a,
                                   bool round_bf16 = true);

// ---- pointwise.h (the CPU loops are inside the entry points, pointwise_cpu.cpp) -------------
void fill_floats_cuda(float* x, int64_t n, float value);
void floats_to_bf16_cuda(const float* x, uint16_t* y, int64_t n);
void bf16_to_floats_cuda(const uint16_t* x, float* y, int64_t n);
void broadcast_rows_cuda(const float* row, int64_t dim, int64_t rows, float* out);
void clip_values_cuda(const float* x, float* y, int64_t n, float limit);
void mask_clip_grad_cuda(float* g, const float* x, int64_t n, float limit);
void add_floats_cuda(const float* a, const float* b, float* out, int64_t n);
void column_sums_add_cuda(const float* x, int64_t rows, int64_t cols, int64_t ld, float* out);
void column_sums_add_f64_cuda(const float* x, int64_t rows, int64_t cols, int64_t ld, double* out);
void add_scaled_table_rows_cuda(float* out, const float* scale, const float* table,
                                const int32_t* ids, int64_t n, int64_t dim);
void sum_to_double_cuda(const float* x, int64_t n, double* out);

// ---- row_scatter.h --------------------------------------------------------------------------
// CPU: throws Error naming the first id outside [0, table_rows) before writing. CUDA: trusts
// the ids.
void scatter_rows_cpu(float* table, int64_t table_rows, int64_t dim, const int32_t* ids, int64_t n,
                      const float* rows);
void scatter_rows_cuda(float* table, int64_t dim, const int32_t* ids, int64_t n, const float* rows);

// ---- sampled_softmax.h ----------------------------------------------------------------------
void sampled_softmax_target_logits_cpu(const float* weight, const float* bias, const float* h,
                                       const int32_t* targets, int64_t rows, int64_t dim,
                                       int64_t tries, int64_t vocab, float* true_logits,
                                       const int32_t* target_rows = nullptr);
void sampled_softmax_target_logits_cuda(const float* weight, const float* bias, const float* h,
                                        const int32_t* targets, int64_t rows, int64_t dim,
                                        int64_t tries, int64_t vocab, float* true_logits,
                                        const int32_t* target_rows = nullptr);
void sampled_softmax_rows_cpu(float* logits, float* true_logits, const float* correction,
                              const int32_t* sample_ids, const int32_t* targets, float* loss,
                              const SampledSoftmaxRowsParams& params);
void sampled_softmax_rows_cuda(float* logits, float* true_logits, const float* correction,
                               const int32_t* sample_ids, const int32_t* targets, float* loss,
                               const SampledSoftmaxRowsParams& params);
// CUDA: the entry point calls column_sums_add_f64 (pointwise.h); no launcher of its own.
void sampled_softmax_sample_bias_grad_cpu(const float* dlogits, int64_t rows, int64_t samples,
                                          double* db);
void sampled_softmax_corrections_cpu(const float* bias, const int32_t* sample_ids,
                                     const float* log_expected, int64_t samples, float* correction);
void sampled_softmax_corrections_cuda(const float* bias, const int32_t* sample_ids,
                                      const float* log_expected, int64_t samples,
                                      float* correction);

}  // namespace elmo
