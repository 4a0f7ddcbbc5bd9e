// Word embedding of the biLM: the row-sparse parameter "embedding.weight" [V, E], its
// initialisation, the forward gather and the backward reduction into SparseRows.
//
// Both directions read the same rows, so backward takes every (ids, d_emb) pair of the step
// and produces one SparseRows (ids ascending unique, rows summed in (id, position) order, the
// positions counting through the pairs in the order given). An existing sparse gradient is
// kept and added to (it enters the sum first), so backward may be called more than once.
// Passing the ids' host copy as well (the batch came from the host) lets backward sort them
// there (kernels/row_sum.h) on every device, and forward check them there on CUDA: neither then
// waits for the device.
// What it is not: the optimizer update (model/optimizer.h) or the distributed row store.
#pragma once

#include <cstdint>
#include <vector>

#include "model/parameters.h"
#include "model/row_layout.h"
#include "runtime/rng.h"
#include "runtime/tensor.h"

namespace elmo {

inline constexpr const char* kEmbeddingWeight = "embedding.weight";

// Registers "embedding.weight" [vocab, dim] (row_sparse, zero) on `device`.
Parameter& register_embedding(ParameterStore& params, int64_t vocab, int64_t dim,
                              Device device = Device::cpu());

// value[e] = (2 u - 1) * scale, u uniform in [0, 1), drawn in row-major order from rng.
void init_uniform(Parameter& param, float scale, Rng& rng);
// The same draws for a table stored in `layout` (model/row_layout.h): every row of the whole
// [V, dim] table is drawn in order, the home rows kept at their slots (the cache rows are left
// as they are), so every layout holds the values of the identity layout.
void init_uniform_rows(Parameter& param, const RowLayout& layout, float scale, Rng& rng);
// value[e] = normal * scale, drawn in row-major order from rng.
void init_normal(Parameter& param, float scale, Rng& rng);

// ids i32 [n] -> out f32 [n, E] (allocated when undefined or of the wrong shape), on the
// parameter's device. An id outside [0, V) is an Error naming it. host_ids (optional, CUDA):
// the same n ids in host memory, checked there instead of reading a flag back from the device.
void embedding_forward(const Parameter& embedding, const Tensor& ids, Tensor& out,
                       const int32_t* host_ids = nullptr);

// One (ids [n], d_emb [n, E]) pair of the backward pass.
struct EmbeddingGrad {
  Tensor ids;  // i32 [n]
  Tensor dy;   // f32 [n, E]
  // Optional host copy of ids ([n]). When every pair has one, the per-id sort runs on the host
  // (kernels/row_sum.h RowSumPlan) and nothing is read back from a device.
  const int32_t* host_ids = nullptr;
};

// Adds the gradient of every pair to embedding.sparse_grad (see the header comment).
// id_rows: the ids' range [0, id_rows) when the pairs carry vocabulary ids of a compacted table
// (model/row_layout.h: forward gathered by slot, the gradient stays by id); 0: the table's rows.
void embedding_backward(Parameter& embedding, const std::vector<EmbeddingGrad>& grads,
                        int64_t id_rows = 0);

}  // namespace elmo
