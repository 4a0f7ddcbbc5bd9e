// BiLM on the CPU or one CUDA device. The layers are device-agnostic (model/lstm_stack.h,
// model/sampled_softmax.h, ...); what differs here is the orchestration of the directions
// (threads on the CPU, streams and events on CUDA) and where the token ids live.
#include "model/bilm.h"

#include <cmath>

#include "kernels/pointwise.h"
#include "model/embedding.h"
#include "model/lstm_stack.h"
#include "model/negative_sampler.h"
#include "model/sampled_softmax.h"
#include "runtime/cuda_memory.h"
#include "runtime/parallel.h"
#include "runtime/pinned.h"
#include "runtime/stream.h"

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

// host i32 [n] -> `device` copy: the tensor itself on the CPU, a pinned asynchronous upload on
// CUDA into `dst` (grown when needed) on the current stream.
const Tensor& ids_on(Device device, const Tensor& host, Tensor& dst) {
  if (device.is_cpu()) return host;
  if (!dst.defined() || !(dst.shape() == host.shape()) || !(dst.device() == device))
    dst = Tensor::empty(host.shape(), DType::kI32, device);
  upload_to_device(device.index, dst.raw(), host.raw(), host.nbytes());
  return dst;
}

// Host copy of targets bound for a CUDA full softmax (whose kernels do not range-check them):
// each in [0, vocab) or kIgnoreTarget, as the CPU layer checks.
void check_full_softmax_targets(const int32_t* targets, int64_t n, int64_t vocab) {
  for (int64_t r = 0; r < n; ++r)
    ELMO_CHECK(targets[r] == kIgnoreTarget || (targets[r] >= 0 && targets[r] < vocab),
               "full softmax: target ", targets[r], " of row ", r, " is outside [0, ", vocab,
               ") and is not kIgnoreTarget (-1)");
}

// out[i] = map[ids[i]]: the rows of a compacted table that hold the ids; Error for an id this
// process does not hold (neither its own nor fetched for the step).
void rows_of_ids(const int32_t* map, int64_t vocab, const int32_t* ids, int64_t n, int32_t* out) {
  for (int64_t i = 0; i < n; ++i) {
    ELMO_CHECK(ids[i] >= 0 && ids[i] < vocab, "embedding: id ", ids[i], " at position ", i,
               " is outside the table of ", vocab, " rows");
    out[i] = map[ids[i]];
    ELMO_CHECK(out[i] >= 0, "embedding: id ", ids[i], " at position ", i, " is not held by this ",
               "rank (neither its own row nor fetched for this step)");
  }
}

void check_state(const LstmState& s, Device device, int direction) {
  ELMO_CHECK(s.h.defined() && s.c.defined() && s.h.device() == device && s.c.device() == device,
             "carried LSTM state of direction ", direction, " is ",
             s.h.defined() ? s.h.describe() : std::string("undefined"), " / ",
             s.c.defined() ? s.c.describe() : std::string("undefined"), " but the model is on ",
             device.str(), " (make it with BiLM::zero_state)");
}

}  // namespace

struct BiLM::Impl {
  std::vector<LstmStack> stacks;  // one per direction
  std::unique_ptr<SampledSoftmax> sampled;
  std::unique_ptr<NegativeSampler> sampler;  // the sampled softmax's samples, step by step
  FullSoftmaxWorkspace full_workspace[2];  // per direction: evaluation runs them concurrently
  Tensor full_dweight, full_dbias;  // [V, H], [V] (full softmax training only)
  std::vector<int32_t> all_ids;     // 0 .. V-1, the rows a full-softmax step touches
  // Per-direction step buffers, reused across steps.
  Tensor host_ids[2], host_targets[2];  // i32 [T * B] time-major, host
  Tensor dev_ids[2], dev_targets[2];    // their copies on a CUDA device (unused on the CPU)
  Tensor host_rows[2], dev_rows[2];     // a compacted embedding: the rows of host_ids
  Tensor embedded[2];                   // [T * B, E]
  Tensor d_top[2];                      // [T * B, H]
  Tensor d_embedded[2];                 // [T * B, E]
  // CUDA: one non-blocking stream per direction, and the events that fork/join them with the
  // caller's (forked[first direction of a call], joined[direction]).
  std::unique_ptr<CudaStream> streams[2];
  std::unique_ptr<CudaEvent> forked[2], joined[2];
};

// What every public call sets up: the thread's current device and GEMM precision.
class BiLM::Scope {
 public:
  explicit Scope(const BiLM& model) : precision_(model.options_.precision) {
    if (model.device_.is_cuda()) cuda_set_device(model.device_.index);
  }

 private:
  GemmPrecisionGuard precision_;
};

BiLM::BiLM(const BilmShape& shape, const BilmTrainOptions& options, Device device,
           const TableLayouts& layouts)
    : shape_(shape), options_(options), device_(device), impl_(std::make_unique<Impl>()) {
  const LstmStackShape stack = stack_shape(shape);
  check_lstm_stack_shape(stack);
  ELMO_REQUIRE(shape.vocab >= 4, "the vocabulary has ", shape.vocab,
               " entries; a language model needs at least the 3 specials and one word");
  ELMO_REQUIRE(options.dropout >= 0.0f && options.dropout < 1.0f, "model.dropout = ",
               options.dropout, " is outside [0, 1)");
  if (device.is_cuda())
    ELMO_REQUIRE(device.index >= 0 && device.index < cuda_device_count(), "device ", device.str(),
                 " requested but ", cuda_device_count(), " GPU(s) are visible");
  const RowLayout embedding_rows =
      layouts.embedding.vocab > 0 ? layouts.embedding : RowLayout::whole(shape.vocab);
  const RowLayout softmax_rows =
      layouts.softmax.vocab > 0 ? layouts.softmax : RowLayout::whole(shape.vocab);
  ELMO_CHECK(embedding_rows.vocab == shape.vocab && softmax_rows.vocab == shape.vocab,
             "table layouts of ", embedding_rows.vocab, " and ", softmax_rows.vocab,
             " rows for a vocabulary of ", shape.vocab);
  ELMO_CHECK(!softmax_rows.is_sharded() || options.softmax == SoftmaxKind::kSampled,
             "a sharded softmax table needs the sampled softmax (the full softmax reads every "
             "row at every step)");
  slots_[kEmbeddingRows] = RowSlots(embedding_rows);
  slots_[kSoftmaxRows] = RowSlots(softmax_rows);
  const Scope scope(*this);
  ELMO_REQUIRE(shape.vocab > 0 && shape.embedding_dim > 0, "embedding: vocabulary size (",
               shape.vocab, ") and dimension (", shape.embedding_dim, ") must be positive");
  Parameter& embedding =
      params_.add(kEmbeddingWeight, {embedding_rows.stored(), shape.embedding_dim},
                  /*row_sparse=*/true, device);
  if (embedding_rows.is_sharded()) embedding.state_rows = embedding_rows.home();
  for (int d = 0; d < shape.directions(); ++d)
    register_lstm_parameters(params_, direction_name(d), stack, device);
  Parameter& softmax_w = params_.add("softmax.weight", {softmax_rows.stored(), shape.hidden()},
                                     /*row_sparse=*/true, device);
  Parameter& softmax_b =
      params_.add("softmax.bias", {softmax_rows.stored()}, /*row_sparse=*/true, device);
  if (softmax_rows.is_sharded()) softmax_w.state_rows = softmax_b.state_rows = softmax_rows.home();
  for (int d = 0; d < shape.directions(); ++d)
    impl_->stacks.emplace_back(params_, direction_name(d), stack, options.lstm_kernel);
  if (options.softmax == SoftmaxKind::kSampled) {
    ELMO_REQUIRE(options.samples > 0 && options.samples < shape.vocab, "softmax.samples = ",
                 options.samples, " must be between 1 and the vocabulary size - 1 (",
                 shape.vocab - 1, "); use softmax.type = \"full\" for small vocabularies");
    impl_->sampled =
        std::make_unique<SampledSoftmax>(shape.vocab, shape.hidden(), options.samples, device);
    impl_->sampled->set_row_slots(slots_[kSoftmaxRows].map());
  }
  impl_->sampler = std::make_unique<NegativeSampler>(shape.vocab, options.samples,
                                                     Rng(options.seed, kRngSampler).state());
  if (device.is_cuda()) {
    for (int d = 0; d < shape.directions(); ++d) {
      impl_->streams[d] = std::make_unique<CudaStream>(device.index);
      impl_->forked[d] = std::make_unique<CudaEvent>(device.index);
      impl_->joined[d] = std::make_unique<CudaEvent>(device.index);
    }
  }
}

BiLM::~BiLM() {
  // Buffers may still be in use by queued work on the directions' streams.
  if (device_.is_cuda()) {
    try {
      cuda_synchronize(device_.index);
    } catch (...) {
      // The device is in an error state: freeing below reports nothing either.
    }
  }
}

void BiLM::for_each_direction(int first, int end, const std::function<void(int)>& task) {
  Impl& m = *impl_;
  if (device_.is_cpu()) {
    if (end - first == 1) task(first);
    else run_concurrently(end - first, [&](int i) { task(first + i); });
    return;
  }
  // One fork point: everything the caller issued so far, recorded once before any direction
  // queues work. (Recording it again per direction would put the second record behind the
  // first direction's work wherever the caller's stream orders against the direction streams.)
  // The event is the first direction's, so calls for different directions from two threads
  // (evaluate) never share one.
  CudaStreamHandle caller = current_stream();
  m.forked[first]->record(caller);
  for (int d = first; d < end; ++d) {
    m.forked[first]->wait(m.streams[d]->get());
    {
      StreamGuard on_direction(m.streams[d]->get());
      task(d);
    }
    m.joined[d]->record(m.streams[d]->get());
  }
  for (int d = first; d < end; ++d) m.joined[d]->wait(caller);
}

const RowLayout* BiLM::table_layout(const std::string& name) const {
  if (name == kEmbeddingWeight) return &slots_[kEmbeddingRows].layout();
  if (name == "softmax.weight" || name == "softmax.bias") return &slots_[kSoftmaxRows].layout();
  return nullptr;
}

void BiLM::require_every_row(const char* what) const {
  if (holds_every_row()) return;
  throw Error(str("BiLM::", what, ": this model holds only rank ",
                  slots_[kEmbeddingRows].layout().rank, "'s rows of its tables (a sharded ",
                  "layout); load a whole model from a checkpoint to ", what));
}

void BiLM::init(uint64_t seed, const BilmInit& init) {
  const Scope scope(*this);
  Rng rng(seed, kRngInit);
  init_uniform_rows(params_.get(kEmbeddingWeight), slots_[kEmbeddingRows].layout(),
                    init.embedding_scale, rng);
  const LstmStackShape stack = stack_shape(shape_);
  for (int d = 0; d < shape_.directions(); ++d)
    init_lstm_parameters(params_, direction_name(d), stack, init.init_scale, rng, init.forget_bias);
  const RowLayout& softmax_rows = slots_[kSoftmaxRows].layout();
  init_uniform_rows(params_.get("softmax.weight"), softmax_rows, init.init_scale, rng);
  if (init.uniform_softmax_bias)
    init_uniform_rows(params_.get("softmax.bias"), softmax_rows, init.init_scale, rng);
  else
    params_.get("softmax.bias").value.zero_();
}

void BiLM::init(uint64_t seed, float init_scale, float embedding_scale) {
  BilmInit values;
  values.init_scale = init_scale;
  values.embedding_scale = embedding_scale;
  init(seed, values);
}

LstmState BiLM::zero_state(int64_t rows) const {
  const Scope scope(*this);
  return {Tensor::zeros({shape_.layers, rows, shape_.hidden()}, DType::kF32, device_),
          Tensor::zeros({shape_.layers, rows, shape_.cell_size}, DType::kF32, device_)};
}

TrainStepResult BiLM::train_step(const TokenBatch* batches, LstmState* states, uint64_t step) {
  Impl& m = *impl_;
  const Scope scope(*this);
  const int dirs = shape_.directions();
  const int64_t B = batches[0].rows, T = batches[0].steps, N = B * T;
  const int64_t E = shape_.embedding_dim, H = shape_.hidden();
  Parameter& embedding = params_.get(kEmbeddingWeight);
  Parameter& softmax_w = params_.get("softmax.weight");
  Parameter& softmax_b = params_.get("softmax.bias");
  const int32_t* embedding_map = slots_[kEmbeddingRows].map();

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
    check_state(states[d], device_, d);
    if (!m.host_ids[d].defined() || m.host_ids[d].numel() != N) {
      m.host_ids[d] = Tensor::empty({N}, DType::kI32);
      m.host_rows[d] = Tensor::empty({N}, DType::kI32);
      m.host_targets[d] = Tensor::empty({N}, DType::kI32);
      m.embedded[d] = Tensor::empty({N, E}, DType::kF32, device_);
      m.d_top[d] = Tensor::empty({N, H}, DType::kF32, device_);
      m.d_embedded[d] = Tensor::empty({N, E}, DType::kF32, device_);
    }
  }
  // Forward of the directions, independent until the shared softmax (CPU: one thread each;
  // CUDA: queued on their streams, so the host goes on to the sampler below at once).
  const Tensor* ids[2] = {nullptr, nullptr};
  const Tensor* targets[2] = {nullptr, nullptr};
  for_each_direction(0, dirs, [&](int d) {
    to_time_major(batches[d].inputs, B, T, m.host_ids[d].data<int32_t>());
    to_time_major(batches[d].targets, B, T, m.host_targets[d].data<int32_t>());
    ids[d] = &ids_on(device_, m.host_ids[d], m.dev_ids[d]);
    targets[d] = &ids_on(device_, m.host_targets[d], m.dev_targets[d]);
    if (embedding_map) {  // a compacted table: gather by row, the gradient stays by id
      rows_of_ids(embedding_map, shape_.vocab, m.host_ids[d].data<int32_t>(), N,
                  m.host_rows[d].data<int32_t>());
      const Tensor& rows = ids_on(device_, m.host_rows[d], m.dev_rows[d]);
      embedding_forward(embedding, rows, m.embedded[d], m.host_rows[d].data<int32_t>());
    } else {
      embedding_forward(embedding, *ids[d], m.embedded[d], m.host_ids[d].data<int32_t>());
    }
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
    std::vector<std::pair<const int32_t*, int64_t>> host_targets;
    for (int d = 0; d < dirs; ++d) host_targets.emplace_back(m.host_targets[d].data<int32_t>(), N);
    m.sampled->begin_step(m.sampler->take(step), host_targets);
    for (int d = 0; d < dirs; ++d)
      m.sampled->forward_backward_deferred(w, b, m.stacks[d].output(),
                                           targets[d]->data<int32_t>(), N, grad_scale,
                                           m.d_top[d].data<float>());
    m.sampled->finish_step(softmax_w, softmax_b);
  } else {
    if (!m.full_dweight.defined()) {
      m.full_dweight = Tensor::empty({shape_.vocab, H}, DType::kF32, device_);
      m.full_dbias = Tensor::empty({shape_.vocab, 1}, DType::kF32, device_);
    }
    m.full_dweight.zero_();
    m.full_dbias.zero_();
    for (int d = 0; d < dirs; ++d) {
      if (!device_.is_cpu())
        check_full_softmax_targets(m.host_targets[d].data<int32_t>(), N, shape_.vocab);
      full_softmax_forward_backward_deferred(
          w, b, shape_.vocab, H, m.stacks[d].output(), targets[d]->data<int32_t>(), N, grad_scale,
          m.d_top[d].data<float>(), m.full_dweight.data<float>(), m.full_dbias.data<float>(),
          kFullSoftmaxChunk, m.full_workspace[d], device_);
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

  for_each_direction(0, dirs, [&](int d) {
    std::function<void(int64_t)> layer_done;
    if (gradient_hook_) layer_done = [&, d](int64_t layer) { gradient_hook_(d, layer); };
    m.stacks[d].backward(m.d_top[d].data<float>(), m.d_embedded[d].data<float>(), layer_done);
  });
  std::vector<EmbeddingGrad> embedding_grads;
  for (int d = 0; d < dirs; ++d)
    embedding_grads.push_back({*ids[d], m.d_embedded[d], m.host_ids[d].data<int32_t>()});
  embedding_backward(embedding, embedding_grads, shape_.vocab);

  // The losses: on CUDA the step's one host synchronisation.
  if (options_.softmax == SoftmaxKind::kSampled) {
    const std::vector<double> sums = m.sampled->loss_sums();
    for (int d = 0; d < dirs; ++d) result.nll[d] = sums[d] / static_cast<double>(N);
  } else {
    for (int d = 0; d < dirs; ++d) {
      const NllSum sum = full_softmax_result(m.full_workspace[d], device_);
      result.nll[d] = sum.count ? sum.nll / sum.count : 0.0;
    }
  }
  result.loss = 0.0;
  for (int d = 0; d < dirs; ++d) result.loss += result.nll[d] / dirs;
  return result;
}

NllSum BiLM::evaluate(int direction, const TokenBatch& batch, LstmState& state,
                      double* position_nll, RankSum* ranks) {
  Impl& m = *impl_;
  const Scope scope(*this);
  ELMO_CHECK(direction >= 0 && direction < shape_.directions(), "BiLM::evaluate: direction ",
             direction, " of a model with ", shape_.directions());
  check_state(state, device_, direction);
  if (!holds_every_row() && ranks != nullptr)
    return evaluate_sharded(direction, batch, state, position_nll, *ranks);
  require_every_row("evaluate");
  const int64_t B = batch.rows, T = batch.steps, N = B * T;
  Tensor host_ids = Tensor::empty({N}, DType::kI32), host_targets = Tensor::empty({N}, DType::kI32);
  to_time_major(batch.inputs, B, T, host_ids.data<int32_t>());
  to_time_major(batch.targets, B, T, host_targets.data<int32_t>());
  if (!device_.is_cpu()) check_full_softmax_targets(host_targets.data<int32_t>(), N, shape_.vocab);
  NllSum result;
  for_each_direction(direction, direction + 1, [&](int d) {
    Tensor dev_ids, dev_targets;
    const Tensor& ids = ids_on(device_, host_ids, dev_ids);
    const Tensor& targets = ids_on(device_, host_targets, dev_targets);
    Tensor embedded = Tensor::empty({N, shape_.embedding_dim}, DType::kF32, device_);
    embedding_forward(params_.get(kEmbeddingWeight), ids, embedded, host_ids.data<int32_t>());
    float* h = state.h.data<float>();
    float* c = state.c.data<float>();
    LstmStack& stack = m.stacks.at(d);
    stack.forward(T, B, embedded.data<float>(), h, c, h, c, LstmStackRun{});
    result = full_softmax_nll(params_.get("softmax.weight").value.data<float>(),
                              params_.get("softmax.bias").value.data<float>(), shape_.vocab,
                              shape_.hidden(), stack.output(), targets.data<int32_t>(), N,
                              kFullSoftmaxChunk, &m.full_workspace[d], device_);
    if (position_nll) {  // time-major rows t * B + b -> batch layout b * T + t
      std::vector<double> rows(static_cast<size_t>(N));
      full_softmax_row_nll(m.full_workspace[d], N, device_, rows.data());
      for (int64_t b = 0; b < B; ++b)
        for (int64_t t = 0; t < T; ++t) position_nll[b * T + t] = rows[t * B + b];
    }
  });
  return result;
}

namespace {

// The rows of a sharded layout this rank scores in a distributed evaluation: its own tail rows,
// and on rank 0 the hot head too (a contiguous slot range [first, home)).
int64_t first_scored_slot(const RowLayout& layout) { return layout.rank == 0 ? 0 : layout.hot; }
bool scores(const RowLayout& layout, int32_t id) {
  return id < layout.hot ? layout.rank == 0 : layout.is_home(id);
}

}  // namespace

NllSum BiLM::evaluate_sharded(int direction, const TokenBatch& batch, LstmState& state,
                              double* position_nll, RankSum& ranks) {
  Impl& m = *impl_;
  const int64_t B = batch.rows, T = batch.steps, N = B * T;
  const int64_t E = shape_.embedding_dim, H = shape_.hidden();
  std::vector<int32_t> ids(static_cast<size_t>(N)), targets(static_cast<size_t>(N));
  to_time_major(batch.inputs, B, T, ids.data());
  to_time_major(batch.targets, B, T, targets.data());
  for (int64_t r = 0; r < N; ++r) {
    ELMO_CHECK(ids[r] >= 0 && ids[r] < shape_.vocab, "evaluate: input id ", ids[r], " at position ",
               r, " is outside the vocabulary [0, ", shape_.vocab, ")");
    ELMO_CHECK(targets[r] == kIgnoreTarget || (targets[r] >= 0 && targets[r] < shape_.vocab),
               "evaluate: target ", targets[r], " at position ", r, " is outside [0, ",
               shape_.vocab, ") and is not kIgnoreTarget (-1)");
  }
  // Embedding by owner: each rank writes the rows it scores, zeros elsewhere; the sum over the
  // ranks has exactly one non-zero contribution per position.
  const RowSlots& in_rows = slots_[kEmbeddingRows];
  std::vector<float> embedded(static_cast<size_t>(N * E), 0.0f);
  {
    std::vector<int32_t> positions, rows;
    for (int64_t r = 0; r < N; ++r)
      if (scores(in_rows.layout(), ids[r])) {
        positions.push_back(static_cast<int32_t>(r));
        rows.push_back(in_rows.slot(ids[r]));
      }
    const int64_t n = static_cast<int64_t>(rows.size());
    Tensor gathered = Tensor::empty({std::max<int64_t>(n, 1), E}, DType::kF32, device_);
    if (n > 0) {
      Tensor row_ids = Tensor::empty({n}, DType::kI32);
      std::copy(rows.begin(), rows.end(), row_ids.data<int32_t>());
      Tensor out = gathered.rows(0, n);
      embedding_forward(params_.get(kEmbeddingWeight), row_ids.to(device_), out,
                        row_ids.data<int32_t>());
      const Tensor host = out.device().is_cpu() ? out : out.to(Device::cpu());
      for (int64_t i = 0; i < n; ++i)
        std::copy_n(host.data<float>() + i * E, E, embedded.data() + positions[i] * E);
    }
  }
  ranks.sum(embedded.data(), N * E);
  Tensor x = Tensor::empty({N, E});
  std::copy(embedded.begin(), embedded.end(), x.data<float>());
  const Tensor x_on = x.to(device_);
  NllSum result;
  for_each_direction(direction, direction + 1, [&](int d) {
    float* h = state.h.data<float>();
    float* c = state.c.data<float>();
    LstmStack& stack = m.stacks.at(d);
    stack.forward(T, B, x_on.data<float>(), h, c, h, c, LstmStackRun{});
    // This rank's softmax rows: targets held here as rows of its slice, others elsewhere.
    const RowSlots& out_rows = slots_[kSoftmaxRows];
    const RowLayout& layout = out_rows.layout();
    // A softmax in the whole layout (softmax.type = "full") holds rows that other ranks own,
    // stale since their last update: it cannot be scored here (the run evaluates a checkpoint).
    ELMO_CHECK(layout.is_sharded(), "BiLM::evaluate with the other ranks needs a sharded ",
               "softmax; this one holds every row");
    const int64_t first = first_scored_slot(layout), count = layout.home() - first;
    Tensor local = Tensor::empty({N}, DType::kI32);
    for (int64_t r = 0; r < N; ++r) {
      const int32_t t = targets[r];
      local.data<int32_t>()[r] = t == kIgnoreTarget ? kIgnoreTarget
                                 : scores(layout, t)
                                     ? out_rows.slot(t) - static_cast<int32_t>(first)
                                     : kTargetElsewhere;
    }
    const Tensor local_on = local.to(device_);
    PartialLse part;
    full_softmax_partial(params_.get("softmax.weight").value.data<float>() + first * H,
                         params_.get("softmax.bias").value.data<float>() + first, count, H,
                         stack.output(), local_on.data<int32_t>(), N, m.full_workspace[d], device_,
                         part);
    // Every rank's (max, sum) at its place (zeros elsewhere: the sum is exact), and the target
    // logits (one contributor each).
    const int world = layout.world, rank = layout.rank;
    std::vector<double> parts(static_cast<size_t>(2 * world * N), 0.0);
    for (int64_t r = 0; r < N; ++r) {
      parts[(rank * N + r) * 2] = part.max[r];
      parts[(rank * N + r) * 2 + 1] = part.sum[r];
    }
    ranks.sum(parts.data(), static_cast<int64_t>(parts.size()));
    ranks.sum(part.target.data(), N);
    for (int64_t r = 0; r < N; ++r) {
      if (position_nll) position_nll[(r % B) * T + r / B] = std::nan("");
      if (targets[r] == kIgnoreTarget) continue;
      float max = -INFINITY;
      double sum = 0.0;
      for (int k = 0; k < world; ++k)  // rank order
        log_sum_exp_merge(max, sum, static_cast<float>(parts[(k * N + r) * 2]),
                          parts[(k * N + r) * 2 + 1]);
      const double lse = static_cast<double>(max) + std::log(sum);
      const double nll = lse - part.target[r];
      if (position_nll) position_nll[(r % B) * T + r / B] = nll;
      result.nll += nll;
      ++result.count;
    }
  });
  return result;
}

std::vector<Tensor> BiLM::representations(int direction, const int32_t* inputs, int64_t rows,
                                          int64_t steps, LstmState& state) {
  const Scope scope(*this);
  ELMO_CHECK(direction >= 0 && direction < shape_.directions(), "BiLM::representations: ",
             "direction ", direction, " of a model with ", shape_.directions());
  check_state(state, device_, direction);
  require_every_row("representations");
  const int64_t N = rows * steps;
  Tensor host_ids = Tensor::empty({N}, DType::kI32);
  to_time_major(inputs, rows, steps, host_ids.data<int32_t>());
  std::vector<Tensor> out;
  for_each_direction(direction, direction + 1, [&](int d) {
    Tensor dev_ids;
    const Tensor& ids = ids_on(device_, host_ids, dev_ids);
    out.push_back(Tensor::empty({steps, rows, shape_.embedding_dim}, DType::kF32, device_));
    Tensor flat = out[0].reshape({N, shape_.embedding_dim});
    embedding_forward(params_.get(kEmbeddingWeight), ids, flat, host_ids.data<int32_t>());
    LstmStack& stack = impl_->stacks.at(d);
    float* h = state.h.data<float>();
    float* c = state.c.data<float>();
    stack.forward(steps, rows, out[0].data<float>(), h, c, h, c, LstmStackRun{});
    for (int64_t l = 0; l < shape_.layers; ++l) {
      Tensor layer = Tensor::empty({steps, rows, shape_.hidden()}, DType::kF32, device_);
      copy_floats(device_, layer.data<float>(), stack.layer_output(l), layer.numel());
      out.push_back(layer);
    }
  });
  return out;
}

TrainStepResult BiLM::train_step(const TokenBatch* batches, LstmState* states, uint64_t step,
                                 Rng& sampler) {
  set_sampler_state(sampler.state());
  const TrainStepResult result = train_step(batches, states, step);
  sampler = Rng(sampler_state());
  return result;
}

const std::vector<int32_t>* BiLM::plan_step(uint64_t step) {
  if (options_.softmax != SoftmaxKind::kSampled) return nullptr;
  return &impl_->sampler->plan(step).ids;
}

RngState BiLM::sampler_state() const { return impl_->sampler->position(); }

void BiLM::set_sampler_state(const RngState& state) { impl_->sampler->restore(state); }

}  // namespace elmo
