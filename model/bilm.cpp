#include "model/bilm.h"

#include <cstring>

#include "model/embedding.h"
#include "model/lstm_stack.h"
#include "model/sampled_softmax.h"
#include "runtime/parallel.h"

namespace elmo {

namespace {

LstmStackShape stack_shape(const BilmShape& s) {
  LstmStackShape shape;
  shape.embedding_dim = s.embedding_dim;
  shape.cell_size = s.cell_size;
  shape.proj_dim = s.proj_dim;
  shape.layers = s.layers;
  shape.cell_clip = s.cell_clip;
  shape.proj_clip = s.proj_clip;
  shape.skip_connections = s.skip_connections;
  return shape;
}

// [B, T] row-major ids -> [T, B] time-major (the order of the model's rows).
void to_time_major(const int32_t* row_major, int64_t rows, int64_t steps, int32_t* out) {
  for (int64_t b = 0; b < rows; ++b)
    for (int64_t t = 0; t < steps; ++t) out[t * rows + b] = row_major[b * steps + t];
}

}  // namespace

struct BiLM::Impl {
  std::vector<LstmStack> stacks;  // one per direction
  std::unique_ptr<SampledSoftmax> sampled;
  FullSoftmaxWorkspace full_workspace[2];  // per direction: evaluation runs them concurrently
  Tensor full_dweight, full_dbias;  // [V, H], [V] (full softmax training only)
  std::vector<int32_t> all_ids;     // 0 .. V-1, the rows a full-softmax step touches
  // Per-direction step buffers, reused across steps.
  Tensor ids[2], targets[2];  // i32 [T * B] time-major
  Tensor embedded[2];         // [T * B, E]
  Tensor d_top[2];            // [T * B, H]
  Tensor d_embedded[2];       // [T * B, E]
};

BiLM::BiLM(const BilmShape& shape, const BilmTrainOptions& options)
    : shape_(shape), options_(options), impl_(std::make_unique<Impl>()) {
  const LstmStackShape stack = stack_shape(shape);
  check_lstm_stack_shape(stack);
  ELMO_REQUIRE(shape.vocab >= 4, "the vocabulary has ", shape.vocab,
               " entries; a language model needs at least the 3 specials and one word");
  ELMO_REQUIRE(options.dropout >= 0.0f && options.dropout < 1.0f, "model.dropout = ",
               options.dropout, " is outside [0, 1)");
  register_embedding(params_, shape.vocab, shape.embedding_dim);
  for (int d = 0; d < shape.directions(); ++d)
    register_lstm_parameters(params_, direction_name(d), stack);
  params_.add("softmax.weight", {shape.vocab, shape.hidden()}, /*row_sparse=*/true);
  params_.add("softmax.bias", {shape.vocab}, /*row_sparse=*/true);
  for (int d = 0; d < shape.directions(); ++d)
    impl_->stacks.emplace_back(params_, direction_name(d), stack);
  if (options.softmax == SoftmaxKind::kSampled) {
    ELMO_REQUIRE(options.samples > 0 && options.samples < shape.vocab, "softmax.samples = ",
                 options.samples, " must be between 1 and the vocabulary size - 1 (",
                 shape.vocab - 1, "); use softmax.type = \"full\" for small vocabularies");
    impl_->sampled = std::make_unique<SampledSoftmax>(shape.vocab, shape.hidden(), options.samples);
  }
}

BiLM::~BiLM() = default;

void BiLM::init(uint64_t seed, float init_scale, float embedding_scale) {
  Rng rng(seed, kRngInit);
  init_uniform(params_.get(kEmbeddingWeight), embedding_scale, rng);
  const LstmStackShape stack = stack_shape(shape_);
  for (int d = 0; d < shape_.directions(); ++d)
    init_lstm_parameters(params_, direction_name(d), stack, init_scale, rng);
  init_uniform(params_.get("softmax.weight"), init_scale, rng);
  params_.get("softmax.bias").value.zero_();
}

LstmState BiLM::zero_state(int64_t rows) const {
  return {Tensor::zeros({shape_.layers, rows, shape_.hidden()}),
          Tensor::zeros({shape_.layers, rows, shape_.cell_size})};
}

TrainStepResult BiLM::train_step(const TokenBatch* batches, LstmState* states, uint64_t step,
                                 Rng& sampler) {
  Impl& m = *impl_;
  const int dirs = shape_.directions();
  const int64_t B = batches[0].rows, T = batches[0].steps, N = B * T;
  const int64_t E = shape_.embedding_dim, H = shape_.hidden();
  Parameter& embedding = params_.get(kEmbeddingWeight);
  Parameter& softmax_w = params_.get("softmax.weight");
  Parameter& softmax_b = params_.get("softmax.bias");

  LstmStackRun run;
  run.training = true;
  run.dropout = options_.dropout;
  run.seed = options_.seed;
  run.step = step;
  const int64_t global_rows = batches[0].global_rows > 0 ? batches[0].global_rows : B;
  ELMO_CHECK(batches[0].row_offset >= 0 && batches[0].row_offset + B <= global_rows,
             "batch rows [", batches[0].row_offset, ", ", batches[0].row_offset + B,
             ") are outside the global batch of ", global_rows, " rows");
  if (global_rows != B) {
    run.global_rows = global_rows;
    run.row_offset = batches[0].row_offset;
  }
  for (int d = 0; d < dirs; ++d) {
    ELMO_CHECK(batches[d].rows == B && batches[d].steps == T, "direction batches differ in shape");
    ELMO_CHECK((batches[d].global_rows > 0 ? batches[d].global_rows : B) == global_rows &&
                   batches[d].row_offset == batches[0].row_offset,
               "direction batches differ in their row shard");
    ELMO_CHECK(states[d].rows() == B, "carried state has ", states[d].rows(), " rows, batch ", B);
    if (!m.ids[d].defined() || m.ids[d].numel() != N) {
      m.ids[d] = Tensor::empty({N}, DType::kI32);
      m.targets[d] = Tensor::empty({N}, DType::kI32);
      m.embedded[d] = Tensor::empty({N, E});
      m.d_top[d] = Tensor::empty({N, H});
      m.d_embedded[d] = Tensor::empty({N, E});
    }
  }
  // The directions are independent until the shared softmax: one thread each.
  run_concurrently(dirs, [&](int d) {
    to_time_major(batches[d].inputs, B, T, m.ids[d].data<int32_t>());
    to_time_major(batches[d].targets, B, T, m.targets[d].data<int32_t>());
    embedding_forward(embedding, m.ids[d], m.embedded[d]);
    float* h = states[d].h.data<float>();
    float* c = states[d].c.data<float>();
    m.stacks[d].forward(T, B, m.embedded[d].data<float>(), h, c, h, c, run);
  });

  // Gradients of loss x T with loss = mean over directions of the mean NLL per row of the
  // global batch.
  const float grad_scale = static_cast<float>(T) / static_cast<float>(global_rows * T * dirs);
  TrainStepResult result;
  const float* w = softmax_w.value.data<float>();
  const float* b = softmax_b.value.data<float>();
  if (options_.softmax == SoftmaxKind::kSampled) {
    std::vector<std::pair<const int32_t*, int64_t>> targets;
    for (int d = 0; d < dirs; ++d) targets.emplace_back(m.targets[d].data<int32_t>(), N);
    m.sampled->begin_step(sampler, targets);
    for (int d = 0; d < dirs; ++d)
      result.nll[d] = m.sampled->forward_backward(w, b, m.stacks[d].output(),
                                                  m.targets[d].data<int32_t>(), N, grad_scale,
                                                  m.d_top[d].data<float>());
    m.sampled->finish_step(softmax_w, softmax_b);
  } else {
    if (!m.full_dweight.defined()) {
      m.full_dweight = Tensor::empty({shape_.vocab, H});
      m.full_dbias = Tensor::empty({shape_.vocab, 1});
    }
    m.full_dweight.zero_();
    m.full_dbias.zero_();
    for (int d = 0; d < dirs; ++d) {
      const NllSum sum = full_softmax_forward_backward(
          w, b, shape_.vocab, H, m.stacks[d].output(), m.targets[d].data<int32_t>(), N,
          grad_scale, m.d_top[d].data<float>(), m.full_dweight.data<float>(),
          m.full_dbias.data<float>(), kFullSoftmaxChunk, &m.full_workspace[0]);
      result.nll[d] = sum.count ? sum.nll / sum.count : 0.0;
    }
    // Every row is touched: hand the dense gradients over as rows 0..V-1.
    if (static_cast<int64_t>(m.all_ids.size()) != shape_.vocab) {
      m.all_ids.resize(shape_.vocab);
      for (int64_t v = 0; v < shape_.vocab; ++v) m.all_ids[v] = static_cast<int32_t>(v);
    }
    softmax_w.sparse_grad.ids = m.all_ids;
    softmax_w.sparse_grad.values = m.full_dweight;
    softmax_b.sparse_grad.ids = m.all_ids;
    softmax_b.sparse_grad.values = m.full_dbias;
  }

  run_concurrently(dirs, [&](int d) {
    m.stacks[d].backward(m.d_top[d].data<float>(), m.d_embedded[d].data<float>());
  });
  std::vector<EmbeddingGrad> embedding_grads;
  for (int d = 0; d < dirs; ++d) embedding_grads.push_back({m.ids[d], m.d_embedded[d]});
  embedding_backward(embedding, embedding_grads);

  result.loss = 0.0;
  for (int d = 0; d < dirs; ++d) result.loss += result.nll[d] / dirs;
  return result;
}

NllSum BiLM::evaluate(int direction, const TokenBatch& batch, LstmState& state) {
  Impl& m = *impl_;
  const int64_t B = batch.rows, T = batch.steps, N = B * T;
  Tensor ids = Tensor::empty({N}, DType::kI32), targets = Tensor::empty({N}, DType::kI32);
  to_time_major(batch.inputs, B, T, ids.data<int32_t>());
  to_time_major(batch.targets, B, T, targets.data<int32_t>());
  Tensor embedded = Tensor::empty({N, shape_.embedding_dim});
  embedding_forward(params_.get(kEmbeddingWeight), ids, embedded);
  float* h = state.h.data<float>();
  float* c = state.c.data<float>();
  LstmStack& stack = m.stacks.at(direction);
  stack.forward(T, B, embedded.data<float>(), h, c, h, c, LstmStackRun{});
  return full_softmax_nll(params_.get("softmax.weight").value.data<float>(),
                          params_.get("softmax.bias").value.data<float>(), shape_.vocab,
                          shape_.hidden(), stack.output(), targets.data<int32_t>(), N,
                          kFullSoftmaxChunk, &m.full_workspace[direction]);
}

std::vector<Tensor> BiLM::representations(int direction, const int32_t* inputs, int64_t rows,
                                          int64_t steps, LstmState& state) {
  const int64_t N = rows * steps;
  Tensor ids = Tensor::empty({N}, DType::kI32);
  to_time_major(inputs, rows, steps, ids.data<int32_t>());
  std::vector<Tensor> out;
  out.push_back(Tensor::empty({steps, rows, shape_.embedding_dim}));
  Tensor flat = out[0].reshape({N, shape_.embedding_dim});
  embedding_forward(params_.get(kEmbeddingWeight), ids, flat);
  LstmStack& stack = impl_->stacks.at(direction);
  float* h = state.h.data<float>();
  float* c = state.c.data<float>();
  stack.forward(steps, rows, out[0].data<float>(), h, c, h, c, LstmStackRun{});
  for (int64_t l = 0; l < shape_.layers; ++l) {
    Tensor layer = Tensor::empty({steps, rows, shape_.hidden()});
    std::memcpy(layer.data<float>(), stack.layer_output(l), layer.nbytes());
    out.push_back(layer);
  }
  return out;
}

}  // namespace elmo
