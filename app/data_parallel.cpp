// Data-parallel training across ranks: see data_parallel.h.
#include "app/data_parallel.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <numeric>
#include <thread>

#include "comm/dense_allreduce.h"
#include "comm/launch.h"
#include "comm/rendezvous.h"
#include "comm/sparse_exchange.h"
#include "io/safetensors.h"
#include "io/token_cache.h"
#include "kernels/embedding.h"
#include "kernels/grad_norm.h"
#include "kernels/pointwise.h"
#include "kernels/row_scatter.h"
#include "model/embedding.h"
#include "model/lstm_stack.h"
#include "runtime/cuda_memory.h"
#include "runtime/log.h"
#include "runtime/pinned.h"

namespace elmo {

namespace fs = std::filesystem;

namespace {

constexpr const char* kTableNames[] = {kEmbeddingWeight, "softmax.weight", "softmax.bias"};
constexpr double kNoLimit = 7 * 24 * 3600.0;  // waits bounded by the fault monitor instead

std::string shard_name(int rank) { return str("shard-", rank); }

std::string pending_shard_path(const std::string& run_dir, int64_t step, int rank) {
  return (fs::path(run_dir) / "checkpoints" / str("step-", step, ".shard-", rank, ".pending"))
      .string();
}

std::string host_name() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0) return "?";
  return name;
}

// Device int32 copy of host ids (uploaded through pinned staging on the current stream).
Tensor upload_ids(const int32_t* ids, int64_t n, Device device) {
  Tensor out = Tensor::empty({std::max<int64_t>(n, 1)}, DType::kI32, device);
  if (n > 0) upload_to_device(device.index, out.raw(), ids, sizeof(int32_t) * n);
  return out;
}

// table[ids[k], :] = rows[k, :] with host `ids` (uploaded for a device table); table and rows
// on `device`.
void scatter_rows_by_host_ids(Device device, float* table, int64_t table_rows, int64_t dim,
                              const int32_t* ids, int64_t n, const float* rows) {
  if (device.is_cpu()) return scatter_rows(device, table, table_rows, dim, ids, n, rows);
  const Tensor device_ids = upload_ids(ids, n, device);
  scatter_rows(device, table, table_rows, dim, device_ids.data<int32_t>(), n, rows);
}

// n floats from `src` on `device` to host memory.
void copy_to_host(float* dst, const float* src, int64_t n, Device device) {
  if (n <= 0) return;
  if (device.is_cpu())
    std::copy_n(src, n, dst);
  else
    cuda_copy(dst, Device::cpu(), src, device, sizeof(float) * n);
}

// The rows `shard` owns of a table (f32, on any device; their rows there given by `slots`), in
// shard order, as a host tensor [shard.count(), ...]: what a checkpoint shard stores.
Tensor gather_shard(const Tensor& table, const TailShard& shard, const RowSlots& slots) {
  const int64_t n = shard.count(), dim = table.numel() / table.size(0);
  std::vector<int64_t> dims = table.shape().vec();
  dims[0] = n;
  if (n == 0) return Tensor::empty(Shape(dims), DType::kF32);
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) ids[i] = slots.slot(static_cast<int32_t>(shard.id(i)));
  // A sharded layout stores the owned rows compacted in shard order: on the host they are a
  // view of the table, written without a copy (a copy would double the tables' memory while
  // the checkpoint is written).
  bool contiguous = true;
  for (int64_t i = 1; i < n && contiguous; ++i) contiguous = ids[i] == ids[0] + i;
  if (table.device().is_cpu() && contiguous) return table.rows(ids[0], ids[0] + n);
  Tensor out = Tensor::empty(Shape(dims), DType::kF32);
  if (table.device().is_cpu()) {
    embedding_gather(Device::cpu(), table.data<float>(), table.size(0), dim, ids.data(), n,
                     out.data<float>());
    return out;
  }
  const Device device = table.device();
  cuda_set_device(device.index);
  const Tensor device_ids = upload_ids(ids.data(), n, device);
  Tensor rows = Tensor::empty(Shape(dims), DType::kF32, device);
  embedding_gather(device, table.data<float>(), table.size(0), dim, device_ids.data<int32_t>(), n,
                   rows.data<float>());
  cuda_copy(out.data<float>(), Device::cpu(), rows.data<float>(), device,
            sizeof(float) * n * dim);
  return out;
}

}  // namespace

std::vector<int32_t> remote_ids(const std::vector<int32_t>& requested, int64_t hot_rows,
                                const TailShard& own) {
  std::vector<int32_t> out;
  out.reserve(requested.size());
  for (const int32_t id : requested)
    if (id >= hot_rows && !own.owns(id)) out.push_back(id);
  return out;
}

std::vector<std::pair<int64_t, int64_t>> bucket_pieces(int64_t count, int64_t max_bytes) {
  const int64_t per = std::max<int64_t>(1, max_bytes / static_cast<int64_t>(sizeof(float)));
  std::vector<std::pair<int64_t, int64_t>> pieces;
  for (int64_t at = 0; at < count; at += per) pieces.emplace_back(at, std::min(per, count - at));
  return pieces;
}

int64_t choose_hot_rows(const TokenCache& data, int64_t vocab, double coverage) {
  std::vector<int64_t> counts(static_cast<size_t>(vocab), 0);
  int64_t total = 0, boundaries = 0;
  for (const TokenShard& shard : data.shards()) {
    const int64_t n = shard.tokens + shard.sentences;
    for (int64_t i = 0; i < n; ++i) {
      const uint32_t id = shard.ids[i];
      if (id == kSentenceEnd)
        ++boundaries;
      else if (id < static_cast<uint64_t>(vocab))
        ++counts[id];
    }
    total += n;
  }
  // Sentence boundaries (<S> fed as an input, </S> as a target, once per sentence) are among
  // the first ids of every vocabulary: they count towards the head from the start.
  int64_t covered = boundaries;
  const double want = coverage * static_cast<double>(total);
  int64_t hot = 1;
  for (int64_t id = 0; id < vocab; ++id) {
    covered += counts[id];
    hot = id + 1;
    if (static_cast<double>(covered) >= want) break;
  }
  return std::max<int64_t>(1, std::min(hot, vocab));
}

DataParallel::DataParallel(const ProcessPlan& plan, double timeout_s)
    : topology_(plan.topology), device_id_(plan.device_id), timeout_s_(timeout_s) {
  ProcessPlan joined = plan;
  joined.timeout_s = timeout_s;
  const Topology topology = topology_;
  const bool serving = plan.serve_store;
  session_ = RankSession::join(joined, [topology, serving](const PeerLost& lost) {
    // The main thread may be blocked in a collective: report and leave from here.
    std::fprintf(stderr, "[elmo_fast] error: %s: %s; stopping (the last checkpoint stays "
                 "loadable: continue with --resume)\n",
                 topology.label().c_str(), lost.what());
    std::fflush(stderr);
    std::fflush(stdout);
    // A rank that serves the rendezvous keeps it up a moment, so that every other rank hears
    // which rank was lost rather than only that the server went away.
    if (serving) std::this_thread::sleep_for(std::chrono::seconds(2));
    ::_exit(1);
  });
  allreduce_ = make_gloo_allreduce(session_->store(), topology_, session_->local_address(),
                                   timeout_s);
  log_info("joined ", topology_.world_size, " ranks (", allreduce_->backend(),
           " all-reduce, rendezvous ", plan.root_host, ":", plan.root_port, ")");
}

DataParallel::~DataParallel() = default;

namespace {
class GlooRankSum : public RankSum {
 public:
  explicit GlooRankSum(DenseAllreduce& allreduce) : allreduce_(allreduce) {}
  void sum(float* data, int64_t count) override { allreduce_.sum(data, count); }
  void sum(double* data, int64_t count) override { allreduce_.sum(data, count); }

 private:
  DenseAllreduce& allreduce_;
};
}  // namespace

DataParallel::TableBytes DataParallel::table_bytes() const {
  TableBytes bytes;
  std::vector<const Tensor*> tensors;
  for (const Parameter* p : tables_) tensors.push_back(&p->value);
  std::vector<std::pair<std::string, Tensor>> state = optimizer_->state_tensors();
  for (const auto& [name, tensor] : state)
    for (const Parameter* p : tables_)
      if (name.rfind(p->name + ".", 0) == 0) tensors.push_back(&tensor);
  for (const Tensor* t : tensors)
    (t->device().is_cpu() ? bytes.host : bytes.device) += static_cast<int64_t>(t->nbytes());
  for (const std::vector<float>& copy : host_tables_)
    bytes.host += static_cast<int64_t>(copy.size() * sizeof(float));
  return bytes;
}

RankSum& DataParallel::rank_sum() {
  if (!rank_sum_) rank_sum_ = std::make_unique<GlooRankSum>(*allreduce_);
  return *rank_sum_;
}

void DataParallel::finish() {
  if (exchange_) exchange_->close();
  session_->finish();
}

Device DataParallel::agree_on_device(bool want_gpu, bool require_gpu) {
  const int gpus = cuda_device_count();
  const int mine = want_gpu && device_id_ >= 0 && device_id_ < gpus ? device_id_ : -1;
  const std::string host = host_name();
  KvStore& store = session_->store();
  store.set(str("device/", topology_.rank), str(mine, " ", host));
  std::vector<std::pair<int, std::string>> all(static_cast<size_t>(topology_.world_size));
  for (int r = 0; r < topology_.world_size; ++r) {
    const std::string value = store.get(str("device/", r), timeout_s_);
    const size_t space = value.find(' ');
    ELMO_CHECK(space != std::string::npos, "rank ", r, " published a malformed device entry '",
               value, "' under device/", r);
    all[r] = {std::stoi(value.substr(0, space)), value.substr(space + 1)};
  }
  ranks_on_host_ = static_cast<int>(
      std::count_if(all.begin(), all.end(), [&](const auto& e) { return e.second == host; }));
  // Every rank sees the same entries, so every rank reaches the same verdict.
  std::string why;
  for (int r = 0; r < topology_.world_size && why.empty(); ++r) {
    if (all[r].first < 0) {
      why = str("rank ", r, " has no GPU (none visible, --no_cuda, or train.device = \"cpu\")");
      break;
    }
    for (int q = 0; q < r && why.empty(); ++q)
      if (all[q] == all[r])
        why = str("ranks ", q, " and ", r, " would share cuda:", all[r].first, " on ",
                  all[r].second, " (NCCL needs one device per rank; give each rank its own "
                  "with --device_ids)");
  }
  if (why.empty()) return Device::cuda(mine);
  if (require_gpu)
    throw UsageError(str("train.device = \"cuda\" in a distributed run, but ", why,
                         "; use train.device = \"auto\" to fall back to CPUs"));
  const bool some_gpu =
      std::any_of(all.begin(), all.end(), [](const auto& e) { return e.first >= 0; });
  if (some_gpu && is_root()) log_warn("distributed ranks train on CPUs: ", why);
  return Device::cpu();
}

void DataParallel::root_first(const std::string& what, const std::function<void()>& work) {
  if (is_root()) work();
  barrier(what);
  if (!is_root()) work();
  barrier(what + "/done");
}

double DataParallel::broadcast_from_root(double value) {
  double shared = is_root() ? value : 0.0;
  allreduce_->sum(&shared, 1);
  return shared;
}

void DataParallel::barrier(const std::string& name) {
  session_->store().barrier("barrier/" + name, topology_.world_size, kNoLimit);
}

bool DataParallel::is_table(const Parameter& p) const {
  return std::find(tables_.begin(), tables_.end(), &p) != tables_.end();
}

void DataParallel::attach(BiLM& model, Optimizer& optimizer, int64_t hot_rows,
                          const DenseSync& sync) {
  ELMO_CHECK(!model_, "DataParallel::attach called twice");
  model_ = &model;
  optimizer_ = &optimizer;
  on_gpu_ = model.device().is_cuda();
  const bool bf16_allreduce = sync.bf16;
  ELMO_CHECK(sync.overlap == "auto" || sync.overlap == "on" || sync.overlap == "off",
             "dist.overlap_allreduce is \"", sync.overlap, "\"; use auto, on or off");
  // ranks_on_host_ comes from agree_on_device, where every rank saw every rank's host: the
  // same verdict everywhere (the ranks must agree on the sequence of collectives).
  const bool one_host = ranks_on_host_ == topology_.world_size;
  const bool overlap = sync.overlap == "on" || (sync.overlap == "auto" && (on_gpu_ || !one_host));
  if (bf16_allreduce && on_gpu_ && !overlap)
    throw Error("dist.allreduce_precision = \"bf16\" applies to the LSTM layers summed during the "
                "backward: set dist.overlap_allreduce = \"auto\" or \"on\" with it");
  if (bf16_allreduce && !on_gpu_)
    throw Error(str("dist.allreduce_precision = \"bf16\" needs GPU ranks (NCCL sums bf16); these "
                    "ranks train on the CPU, where Gloo sums fp32: set dist.allreduce_precision "
                    "= \"fp32\" or train on GPUs"));
  const int64_t vocab = model.shape().vocab;
  hot_rows_ = std::clamp<int64_t>(hot_rows, 0, vocab);
  std::vector<SparseTable> specs;
  for (const char* name : kTableNames) {
    Parameter& p = model.params().get(name);
    ELMO_CHECK(p.row_sparse, name, " is expected to be row-sparse");
    const RowSlots& slots =
        model.row_slots(tables_.empty() ? BiLM::kEmbeddingRows : BiLM::kSoftmaxRows);
    const RowLayout& layout = slots.layout();
    ELMO_CHECK(!layout.is_sharded() || (layout.hot == hot_rows_ && layout.rank == topology_.rank &&
                                        layout.world == topology_.world_size),
               name, " is stored for rank ", layout.rank, " of ", layout.world, " with ",
               layout.hot, " hot rows; this is rank ", topology_.rank, " of ", topology_.world_size,
               " with ", hot_rows_);
    tables_.push_back(&p);
    slots_.push_back(&slots);
    float* values = nullptr;
    if (on_gpu_) {  // the host working copy starts equal to the device table (same layout)
      host_tables_.push_back(p.value.to_floats());
      values = host_tables_.back().data();
    } else {
      values = p.value.data<float>();
    }
    specs.push_back({name, values, vocab, p.row_dim(), hot_rows_, slots.map()});
  }
  // The LSTM gradients are reduced layer by layer during the backward (DenseOverlap), in a
  // fixed order: the top layer of each direction first, as the backward finishes them. Their
  // parameters come first in the bucket, one contiguous segment per layer and direction; any
  // other dense parameter and the hot blocks are reduced after the backward.
  const int dirs = model.shape().directions();
  const int64_t layers = model.shape().layers;
  std::vector<DenseOverlap::Group> groups;
  std::vector<std::vector<int>> group_of(dirs, std::vector<int>(layers, -1));
  int64_t offset = 0;
  for (int64_t l = overlap ? layers - 1 : -1; l >= 0; --l)
    for (int d = 0; d < dirs; ++d) {
      const std::string prefix = lstm_parameter_name(BiLM::direction_name(d), l, "");
      DenseOverlap::Group group;
      group.offset = offset;
      for (Parameter* p : model.params().all())
        if (!is_table(*p) && p->name.rfind(prefix, 0) == 0) {
          group.params.push_back(p);
          dense_.push_back(p);
          offset += p->grad.numel();
        }
      ELMO_CHECK(!group.params.empty(), "no parameters named ", prefix, "* in the model");
      group_of[d][l] = static_cast<int>(groups.size());
      groups.push_back(std::move(group));
    }
  late_offset_ = offset;
  for (Parameter* p : model.params().all())
    if (!is_table(*p) && std::find(dense_.begin(), dense_.end(), p) == dense_.end())
      dense_.push_back(p);
  int64_t bucket = 0;
  for (const Parameter* p : dense_) bucket += p->grad.numel();
  for (const Parameter* p : tables_) bucket += hot_rows_ * p->row_dim();
  bucket_ = Tensor::zeros({std::max<int64_t>(bucket, 1)}, DType::kF32, model.device());
  if (on_gpu_)
    nccl_ = make_nccl_allreduce(session_->store(), topology_, model.device().index, timeout_s_);
  fetched_[0].assign(tables_.size(), {});
  fetched_[1].assign(tables_.size(), {});
  overlap_ = std::make_unique<DenseOverlap>(
      std::move(groups), bucket_.data<float>(), on_gpu_ ? *nccl_ : *allreduce_, model.device(),
      on_gpu_ ? kNcclBucketBytes / static_cast<int64_t>(sizeof(float)) : 0, bf16_allreduce);
  if (overlap)
    model.set_gradient_hook(
        [this, group_of](int d, int64_t l) { overlap_->ready(group_of[d][l]); });
  needed_.assign(tables_.size(), {});
  grad_values_.assign(tables_.size(), Tensor());
  seen_.assign(static_cast<size_t>(vocab), 0);
  SparseExchangeOptions options;
  options.timeout_s = timeout_s_;
  exchange_ = std::make_unique<SparseExchange>(session_->store(), topology_, specs, options);
  const TailShard own = exchange_->owned_rows(0);
  const std::string how =
      on_gpu_ ? str(", NCCL on ", model.device().str(), " in ",
                    bucket_pieces(bucket, kNcclBucketBytes).size(), " piece(s)")
              : std::string();
  log_info("tables: ids below ", hot_rows_, " replicated (", bucket, " floats all-reduced per "
           "step with the dense gradients",
           overlap ? str(", the LSTM layers' ", late_offset_, " during the backward") : "",
           bf16_allreduce ? " in bf16" : "", how, "), this rank owns ", own.count(), " tail rows (ids ", hot_rows_,
           " + ", own.rank, " + k x ", own.world_size, ")");
  for (const auto& [group, what] :
       {std::pair{BiLM::kEmbeddingRows, "embedding"}, std::pair{BiLM::kSoftmaxRows, "softmax"}}) {
    const RowLayout& layout = model.row_slots(group).layout();
    log_info(what, " rows stored: ",
             layout.is_sharded() ? str(layout.stored(), " of ", vocab, " (", layout.hot, " hot + ",
                                       layout.owned(), " own + a step cache of ", layout.cache, ")")
                                 : str("all ", vocab, " (full-size layout)"));
  }
}

void DataParallel::begin_step() { overlap_->begin_step(); }

void DataParallel::request_rows(int64_t step, const TokenBatch* batches, int dirs,
                                const std::vector<int32_t>* samples) {
  const int64_t vocab = model_->shape().vocab;
  auto collect = [&](std::vector<int32_t>& out, auto&& for_each_id) {
    out.clear();
    for_each_id([&](int32_t id) {
      if (id >= hot_rows_ && !seen_[id]) seen_[id] = 1, out.push_back(id);
    });
    for (const int32_t id : out) seen_[id] = 0;
    std::sort(out.begin(), out.end());
  };
  collect(needed_[0], [&](auto&& add) {
    for (int d = 0; d < dirs; ++d)
      for (int64_t i = 0; i < batches[d].rows * batches[d].steps; ++i) add(batches[d].inputs[i]);
  });
  collect(needed_[1], [&](auto&& add) {
    if (!samples) {
      for (int64_t id = 0; id < vocab; ++id) add(static_cast<int32_t>(id));
      return;
    }
    for (const int32_t id : *samples) add(id);
    for (int d = 0; d < dirs; ++d)
      for (int64_t i = 0; i < batches[d].rows * batches[d].steps; ++i) add(batches[d].targets[i]);
  });
  needed_[2] = needed_[1];  // the bias rows go with the weight rows
  if (restart_) {
    exchange_offset_ = last_exchange_step_ + 1 - step;
    restart_ = false;
  }
  const int64_t seq = exchange_step(step);
  exchange_->request_rows(seq, needed_);
  for (size_t t = 0; t < tables_.size(); ++t)
    fetched_[seq & 1][t] =
        remote_ids(needed_[t], hot_rows_, exchange_->owned_rows(static_cast<int>(t)));
}

void DataParallel::place_fetched_rows(int64_t seq) {
  // The rows of the step before are no longer read (its update is done): this step's remote
  // rows take over the step caches before the exchange writes them there. The softmax weight
  // and bias share one placement (table 1's ids).
  for (const auto& [group, table] :
       {std::pair{BiLM::kEmbeddingRows, 0}, std::pair{BiLM::kSoftmaxRows, 1}}) {
    RowSlots& slots = model_->row_slots(group);
    if (slots.layout().is_sharded()) slots.place(fetched_[seq & 1][table]);
  }
}

void DataParallel::wait_rows(int64_t step) {
  const int64_t seq = exchange_step(step);
  place_fetched_rows(seq);
  exchange_->wait_rows(seq);
  if (on_gpu_) upload_fetched_rows(seq);
}

void DataParallel::abandon_step(int64_t step) {
  const int64_t seq = exchange_step(step);
  place_fetched_rows(seq);
  exchange_->wait_rows(seq);
  const std::vector<int32_t> none;
  SparseExchange::GradientRows pushes(tables_.size(), {&none, nullptr});
  std::vector<SummedRows> sums;
  exchange_->exchange_gradients(seq, pushes, sums);
  exchange_->rows_updated(seq);
  last_exchange_step_ = seq;
}

void DataParallel::restart_steps() { restart_ = true; }

void DataParallel::tables_restored() {
  if (!on_gpu_) return;  // the exchange serves the model's own tables
  for (size_t t = 0; t < tables_.size(); ++t) {
    const std::vector<float> rows = tables_[t]->value.to_floats();
    std::copy(rows.begin(), rows.end(), host_tables_[t].begin());
  }
}

void DataParallel::upload_fetched_rows(int64_t step) {
  const Device device = model_->device();
  cuda_set_device(device.index);
  std::vector<float> staging;
  for (size_t t = 0; t < tables_.size(); ++t) {
    const std::vector<int32_t>& ids = fetched_[step & 1][t];
    if (ids.empty()) continue;
    Parameter& p = *tables_[t];
    const int64_t n = static_cast<int64_t>(ids.size()), dim = p.row_dim();
    const std::vector<int32_t> rows_at = slots_of(t, ids);
    staging.resize(static_cast<size_t>(n * dim));
    embedding_gather(Device::cpu(), host_tables_[t].data(), p.rows(), dim, rows_at.data(), n,
                     staging.data());
    const Tensor device_ids = upload_ids(rows_at.data(), n, device);
    Tensor rows = Tensor::empty({n, dim}, DType::kF32, device);
    upload_to_device(device.index, rows.raw(), staging.data(), sizeof(float) * n * dim);
    scatter_rows(device, p.value.data<float>(), p.rows(), dim, device_ids.data<int32_t>(), n,
                 rows.data<float>());
  }
}

std::vector<int32_t> DataParallel::slots_of(size_t t, const std::vector<int32_t>& ids) const {
  std::vector<int32_t> out(ids.size());
  std::transform(ids.begin(), ids.end(), out.begin(),
                 [&](int32_t id) { return slots_[t]->slot(id); });
  return out;
}

size_t DataParallel::hot_prefix(const std::vector<int32_t>& ascending_ids) const {
  const int32_t first_tail = static_cast<int32_t>(std::min<int64_t>(hot_rows_, INT32_MAX));
  return static_cast<size_t>(
      std::lower_bound(ascending_ids.begin(), ascending_ids.end(), first_tail) -
      ascending_ids.begin());
}

StepTotals DataParallel::reduce_totals(double replicated_sq, const TrainStepResult& local,
                                       int64_t local_rows, int64_t global_rows,
                                       bool stop_requested, bool checkpoint_due) {
  double owned_sq = 0.0;
  for (const SummedRows& rows : owned_sums_)
    for (const float g : rows.values) owned_sq += static_cast<double>(g) * g;
  double scalars[5] = {owned_sq, local.nll[0] * local_rows, local.nll[1] * local_rows,
                       stop_requested ? 1.0 : 0.0, is_root() && checkpoint_due ? 1.0 : 0.0};
  allreduce_->sum(scalars, 5);
  StepTotals totals;
  totals.grad_norm = std::sqrt(replicated_sq + scalars[0]);
  const int dirs = model_->shape().directions();
  for (int d = 0; d < dirs; ++d) {
    totals.nll[d] = scalars[1 + d] / static_cast<double>(global_rows);
    totals.loss += totals.nll[d] / dirs;
  }
  totals.stop = scalars[3] > 0.0;
  totals.checkpoint = scalars[4] > 0.0;
  return totals;
}

void DataParallel::set_table_gradient(size_t t, const float* hot_block) {
  Parameter& p = *tables_[t];
  const Device device = p.value.device();
  const SummedRows& owned = owned_sums_[t];
  const int64_t dim = p.row_dim();
  const int64_t n = hot_rows_ + static_cast<int64_t>(owned.ids.size());
  SparseRows g;  // by row of the table: hot ids at their ids, owned ids at their home slots
  g.ids.resize(static_cast<size_t>(n));
  std::iota(g.ids.begin(), g.ids.begin() + hot_rows_, 0);
  const RowSlots& slots = *slots_[t];
  std::transform(owned.ids.begin(), owned.ids.end(), g.ids.begin() + hot_rows_,
                 [&](int32_t id) { return slots.slot(id); });
  // [n, dim] ([n, 1] for the bias, as the softmax hands it over) in a buffer kept across steps.
  Tensor& buffer = grad_values_[t];
  if (!buffer.defined() || buffer.size(0) < std::max<int64_t>(n, 1))
    buffer = Tensor::empty({std::max<int64_t>(n, 1), dim}, DType::kF32, device);
  g.values = buffer.rows(0, n);
  float* values = g.values.data<float>();
  copy_floats(device, values, hot_block, hot_rows_ * dim);
  if (device.is_cpu())
    std::copy(owned.values.begin(), owned.values.end(), values + hot_rows_ * dim);
  else if (!owned.values.empty())
    upload_to_device(device.index, values + hot_rows_ * dim, owned.values.data(),
                     sizeof(float) * owned.values.size());
  p.sparse_grad = std::move(g);
}

void DataParallel::sum_bucket(float* from, int64_t count) {
  if (!on_gpu_) return allreduce_->sum(from, count);
  for (const auto& [offset, n] : bucket_pieces(count, kNcclBucketBytes))
    nccl_->sum(from + offset, n);
}

double DataParallel::bucket_sum_of_squares(int64_t count) const {
  if (on_gpu_) return count > 0 ? sum_of_squares({bucket_.rows(0, count)}) : 0.0;
  double sq = 0.0;
  const float* g = bucket_.data<float>();
  for (int64_t i = 0; i < count; ++i) sq += static_cast<double>(g[i]) * g[i];
  return sq;
}

void DataParallel::refresh_host_rows() {
  const Device device = model_->device();
  std::vector<float> staging;
  for (size_t t = 0; t < tables_.size(); ++t) {
    const std::vector<int32_t>& ids = owned_sums_[t].ids;
    if (ids.empty()) continue;
    const Parameter& p = *tables_[t];
    const int64_t n = static_cast<int64_t>(ids.size()), dim = p.row_dim();
    const std::vector<int32_t> rows_at = slots_of(t, ids);
    const Tensor device_ids = upload_ids(rows_at.data(), n, device);
    Tensor rows = Tensor::empty({n, dim}, DType::kF32, device);
    embedding_gather(device, p.value.data<float>(), p.rows(), dim, device_ids.data<int32_t>(), n,
                     rows.data<float>());
    staging.resize(static_cast<size_t>(n * dim));
    cuda_copy(staging.data(), Device::cpu(), rows.data<float>(), device, sizeof(float) * n * dim);
    scatter_rows(Device::cpu(), host_tables_[t].data(), p.rows(), dim, rows_at.data(), n,
                 staging.data());
  }
}

StepTotals DataParallel::finish_step(int64_t step, float lr, const TrainStepResult& local,
                                     int64_t local_rows, int64_t global_rows, bool stop_requested,
                                     bool checkpoint_due) {
  const Device device = model_->device();
  if (on_gpu_) cuda_set_device(device.index);
  // 1. One bucket on the model's device: the LSTM gradients (copied and being reduced by
  //    overlap_ already), any other dense gradient, then each table's hot block (the hot
  //    gradient rows scattered into zeros). Sparse gradient ids are ascending, so the hot ids
  //    are a prefix; the tail rows after it are copied to the host for the exchange.
  float* const bucket = bucket_.data<float>();
  float* at = bucket;
  for (const Parameter* p : dense_) {
    if (at >= bucket + late_offset_) copy_floats(device, at, p->grad.data<float>(), p->grad.numel());
    at += p->grad.numel();
  }
  std::vector<float*> hot_blocks;
  std::vector<std::vector<int32_t>> tail_ids(tables_.size());
  std::vector<std::vector<float>> tail_rows(tables_.size());
  for (size_t t = 0; t < tables_.size(); ++t) {
    const Parameter& p = *tables_[t];
    const int64_t dim = p.row_dim();
    fill_floats(device, at, hot_rows_ * dim, 0.0f);
    hot_blocks.push_back(at);
    const SparseRows& g = p.sparse_grad;
    const int64_t n = static_cast<int64_t>(g.ids.size());
    const int64_t hot = static_cast<int64_t>(hot_prefix(g.ids));
    if (hot > 0)
      scatter_rows_by_host_ids(device, at, hot_rows_, dim, g.ids.data(), hot,
                               g.values.data<float>());
    if (n > hot) {
      tail_ids[t].assign(g.ids.begin() + hot, g.ids.end());
      tail_rows[t].resize(static_cast<size_t>((n - hot) * dim));
      copy_to_host(tail_rows[t].data(), g.values.data<float>() + hot * dim, (n - hot) * dim,
                   device);
    }
    at += hot_rows_ * dim;
  }
  const int64_t count = at - bucket;

  // 2. The dense sum (what overlap_ has left of the LSTM layers, then the rest of the bucket)
  //    while the tail gradients go to their owners (UCX, host memory). A GPU rank sums on this
  //    thread (its device and stream: NCCL) and exchanges on a second one; a CPU rank sums on
  //    the second thread (Gloo) and exchanges on this one.
  std::exception_ptr dense_error, sparse_error;
  const auto dense = [&] {
    try {
      overlap_->finish_step();
      sum_bucket(bucket + late_offset_, count - late_offset_);
    } catch (...) {
      dense_error = std::current_exception();
    }
  };
  const auto sparse = [&] {
    try {
      SparseExchange::GradientRows pushes;
      for (size_t t = 0; t < tables_.size(); ++t)
        pushes.emplace_back(&tail_ids[t], tail_rows[t].data());
      exchange_->exchange_gradients(exchange_step(step), pushes, owned_sums_);
    } catch (...) {
      sparse_error = std::current_exception();
    }
  };
  std::thread second([&] {
    if (on_gpu_)
      sparse();
    else
      dense();
  });
  if (on_gpu_)
    dense();
  else
    sparse();
  second.join();
  if (dense_error) std::rethrow_exception(dense_error);
  if (sparse_error) std::rethrow_exception(sparse_error);

  // 3. Norm: the replicated part is the same on every rank; the owned tail rows are summed over
  //    ranks with the step's scalars.
  StepTotals totals = reduce_totals(bucket_sum_of_squares(count), local, local_rows, global_rows,
                                    stop_requested, checkpoint_due);
  const int64_t seq = exchange_step(step);
  if (!std::isfinite(totals.loss) || !std::isfinite(totals.grad_norm)) {
    // Every rank sees the same sums, so every rank skips: no update, the gradients dropped.
    totals.skipped = true;
    model_->params().zero_grads();
    exchange_->rows_updated(seq);  // no owned row changed
    last_exchange_step_ = seq;
    return totals;
  }

  // 4. Gradients back in place: dense tensors, and per table the hot rows + the owned tail sums
  //    as the sparse gradient; the optimizer updates where the model lives.
  at = bucket;
  for (Parameter* p : dense_) {
    copy_floats(device, p->grad.data<float>(), at, p->grad.numel());
    at += p->grad.numel();
  }
  for (size_t t = 0; t < tables_.size(); ++t) set_table_gradient(t, hot_blocks[t]);
  optimizer_->apply(lr, optimizer_->clip_scale(totals.grad_norm));
  model_->params().zero_grads();

  // 5. A GPU rank's updated owned rows go back into the host copy the exchange serves from (a
  //    CPU rank's exchange serves the model's tables themselves).
  if (on_gpu_) refresh_host_rows();
  exchange_->rows_updated(seq);
  last_exchange_step_ = seq;
  return totals;
}

std::string DataParallel::write_shard(const std::string& run_dir, int64_t step,
                                      const LstmState* states, int dirs) const {
  NamedTensors tensors;
  for (size_t t = 0; t < tables_.size(); ++t) {
    const Parameter& p = *tables_[t];
    tensors.emplace_back(
        "model/" + p.name,
        gather_shard(p.value, exchange_->owned_rows(static_cast<int>(t)), *slots_[t]));
  }
  for (auto& [name, tensor] : optimizer_->state_tensors())
    for (size_t t = 0; t < tables_.size(); ++t)
      if (name.rfind(tables_[t]->name + ".", 0) == 0)
        tensors.emplace_back(
            "optimizer/" + name,
            gather_shard(tensor, exchange_->owned_rows(static_cast<int>(t)), *slots_[t]));
  for (int d = 0; d < dirs; ++d) {
    tensors.emplace_back(str("carry/carry.", BiLM::direction_name(d), ".h"), states[d].h);
    tensors.emplace_back(str("carry/carry.", BiLM::direction_name(d), ".c"), states[d].c);
  }
  const std::string path = pending_shard_path(run_dir, step, topology_.rank);
  fs::create_directories(fs::path(path).parent_path());
  save_safetensors(path, tensors, {{"rank", std::to_string(topology_.rank)},
                                   {"world_size", std::to_string(topology_.world_size)}});
  return path;
}

std::vector<std::pair<std::string, std::string>> DataParallel::shard_files(
    const std::string& run_dir, int64_t step) const {
  std::vector<std::pair<std::string, std::string>> files;
  for (int r = 0; r < topology_.world_size; ++r)
    files.emplace_back(shard_name(r), pending_shard_path(run_dir, step, r));
  return files;
}

void DataParallel::discard_shards(const std::string& run_dir, int64_t step) const {
  std::error_code ec;
  for (int r = 0; r < topology_.world_size; ++r)
    if (r == topology_.rank || is_root()) fs::remove(pending_shard_path(run_dir, step, r), ec);
}

std::string DataParallel::agree_on_errors(const std::string& name, const std::string& mine) {
  KvStore& store = session_->store();
  store.set(str("errors/", name, "/", topology_.rank), mine);
  barrier(name);
  for (int r = 0; r < topology_.world_size; ++r) {
    const std::string error = store.get(str("errors/", name, "/", r), timeout_s_);
    if (!error.empty()) return str("rank ", r, ": ", error);
  }
  return "";
}

NamedTensors DataParallel::replicated_model_tensors() const {
  NamedTensors out;
  for (const Parameter* p : model_->params().all())
    out.emplace_back(p->name, is_table(*p) ? p->value.rows(0, hot_rows_) : p->value);
  return out;
}

NamedTensors DataParallel::replicated_optimizer_tensors() const {
  NamedTensors out;
  for (auto& [name, tensor] : optimizer_->state_tensors()) {
    bool table = false;
    for (const Parameter* p : tables_) table = table || name.rfind(p->name + ".", 0) == 0;
    out.emplace_back(name, table ? tensor.rows(0, hot_rows_) : tensor);
  }
  return out;
}

nlohmann::json DataParallel::shards_state() const {
  nlohmann::json files = nlohmann::json::array();
  for (int r = 0; r < topology_.world_size; ++r) files.push_back(shard_name(r));
  return {{"files", files},
          {"axis", {{"model", 0}, {"optimizer", 0}, {"carry", 1}}},
          {"interleave", {"model", "optimizer"}},
          {"hot_rows", hot_rows_}};
}

std::string DataParallel::explain(const std::exception& error) const {
  // The monitor exits the process itself when the rendezvous names a lost rank; give it a moment
  // to do so before reporting the transport's own words.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (std::chrono::steady_clock::now() < deadline) {
    if (const auto fault = session_->store().fault()) return fault->what();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return error.what();
}

}  // namespace elmo
