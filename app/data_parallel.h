// Data-parallel training across ranks (DESIGN.md §6): what one rank of a distributed run adds to
// the training loop in app/train.cpp, which drives it through DataParallelStepRunner
// (app/step_runner.h).
//
// Per step k every rank holds rows [row_offset, row_offset + B/N) of the global batch. Dense
// parameters are replicated; their gradients, and the gradients of the hot head of the embedding
// and softmax tables (ids < hot_rows), are summed over ranks in one all-reduce (Gloo), which runs
// concurrently with the exchange of the tail rows' gradients with their owners (UCX, see
// comm/sparse_exchange.h). The global gradient norm is the replicated part plus the sum over
// owners of their tail rows; every rank then applies the same clipped update to the replicated
// parameters and its owned tail rows. Tail rows a step needs are requested one step ahead, so
// their transfer overlaps the previous step's compute.
//
// GPU ranks (the model on cuda:N, N = the rank's ProcessPlan.device_id). The replicated part
// goes through a device bucket (dense gradients in registry order, then each table's hot block)
// summed by NCCL in pieces of at most kNcclBucketBytes; scalars (norm part, loss sums, stop and
// checkpoint flags) and barriers stay on Gloo. The row exchange is host memory only (Debian's
// UCX has no CUDA transports), so each table keeps a host working copy [V, dim] that
// SparseExchange serves from and fetches into: after wait_rows(k) the rows fetched for step k
// are scattered onto the device table; the tail gradient rows are downloaded, exchanged, and the
// owned sums uploaded with the hot block as the device sparse gradient; the optimizer applies on
// the device, and the updated owned rows are downloaded into the host copy before
// rows_updated(k). The device tensors are authoritative for hot and owned rows (checkpoints
// read them); the host copy holds the owned rows for serving and the fetched rows in transit.
//
// Faults: a rank that dies, hangs or leaves without saying goodbye is reported by the
// rendezvous to every other rank, which logs which rank was lost and exits with status 1 at
// once (the last checkpoint stays loadable; --resume continues).
//
// What it is not: the launcher (comm/launch.h), nor the training loop itself.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "app/dense_overlap.h"
#include "comm/launch.h"
#include "comm/sparse_exchange.h"
#include "comm/topology.h"
#include "io/checkpoint.h"
#include "model/bilm.h"
#include "model/optimizer.h"

namespace elmo {

class RankSession;
class DenseAllreduce;
class SparseExchange;
class TokenCache;

// The smallest id prefix whose occurrences in `data` (words and sentence boundaries as the
// batcher feeds them) reach `coverage` of all; at least 1, at most vocab.
int64_t choose_hot_rows(const TokenCache& data, int64_t vocab, double coverage);

struct StepTotals {
  double loss = 0.0;          // over the global batch
  double nll[2] = {0.0, 0.0};
  double grad_norm = 0.0;     // before clipping
  bool stop = false;          // some rank was asked to stop (signal): all stop after this step
  bool checkpoint = false;    // rank 0's time-based checkpoint is due: all save after this step
  bool skipped = false;       // loss or norm not finite: no update anywhere (finish_step)
};

class DataParallel {
 public:
  // Joins the job of a rank process (plan.kind == kRank): serves the rendezvous store when the
  // plan says so (rank 0 under mpirun/srun/torchrun-style environments), connects, starts the
  // fault monitor and builds the dense all-reduce. timeout_s bounds every wait for a peer.
  DataParallel(const ProcessPlan& plan, double timeout_s);
  // Without finish() the rank did not end cleanly: its peers are told it was lost.
  ~DataParallel();
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  const Topology& topology() const { return topology_; }
  // The CUDA device the launcher gave this rank (-1: none).
  int device_id() const { return device_id_; }

  // Collective: every rank says whether it wants its GPU (want_gpu: train.device is "auto" or
  // "cuda" and --no_cuda is absent; require_gpu: "cuda"), then all agree. GPUs are used when
  // every rank has one and no two ranks on one host share a device (NCCL needs one device per
  // rank); otherwise every rank trains on the CPU (logged on rank 0), or, with require_gpu, every
  // rank throws UsageError naming the conflict.
  Device agree_on_device(bool want_gpu, bool require_gpu);
  // Ranks of the job on this machine (by hostname; known after agree_on_device, else the
  // launcher's local size): train.threads = 0 splits the cores among them.
  int ranks_on_this_host() const {
    return ranks_on_host_ > 0 ? ranks_on_host_ : topology_.local_size;
  }
  bool is_root() const { return topology_.rank == 0; }

  // Runs `work` on rank 0 first, then on every other rank at once (set-up that writes shared
  // files: the builtin corpus, the vocabulary, the token cache). Waits without a time limit:
  // liveness is watched by the fault monitor.
  void root_first(const std::string& what, const std::function<void()>& work);
  // Every rank reaches `name` (no time limit, see root_first).
  void barrier(const std::string& name);
  // Rank 0's `value` on every rank (collective; an all-reduce in which the others add 0, so
  // the result is rank 0's bits). Between steps only: it uses the dense all-reduce.
  double broadcast_from_root(double value);

  // How the dense gradients are summed (config [dist]).
  struct DenseSync {
    bool bf16 = false;  // allreduce_precision "bf16": GPU ranks only (an Error on CPU ranks)
    // overlap_allreduce: "on" reduces the LSTM layers during the backward (DenseOverlap), "off"
    // after it in one bucket, "auto" is on for GPU ranks and for CPU ranks spread over several
    // hosts, off for CPU ranks sharing one machine (there the all-reduce competes with the
    // backward for the same cores: measured slower, BENCHMARKS.md).
    std::string overlap = "auto";
  };
  // From now on the embedding and softmax tables are shared: ids < hot_rows replicated, the
  // tail sharded by row. Call once, after the model and optimizer exist (and after
  // agree_on_device, whose host count decides overlap "auto" the same way on every rank).
  void attach(BiLM& model, Optimizer& optimizer, int64_t hot_rows, const DenseSync& sync);
  int64_t hot_rows() const { return hot_rows_; }

  // Tail rows step `step` needs: the inputs of every direction (embedding) and the targets plus
  // `samples` (softmax; every row when samples is null, i.e. the full softmax).
  void request_rows(int64_t step, const TokenBatch* batches, int dirs,
                    const std::vector<int32_t>* samples);
  void wait_rows(int64_t step);

  // Right before the local train_step: arms the layer-by-layer all-reduce of the LSTM
  // gradients, which runs while the backward computes (app/dense_overlap.h).
  void begin_step();
  // After the local train_step of `step`: sums gradients over ranks, clips with the global norm,
  // applies the update with `lr` (replicated parameters and owned tail rows) and zeroes every
  // gradient. `local` holds this rank's per-direction mean NLL over its `local_rows` rows. One
  // sequence for CPU and GPU ranks; what differs by device is in the small pieces below.
  // When the summed loss or the global norm is NaN or Inf, every rank skips the update alike
  // (StepTotals::skipped): no parameter or accumulator changes, the gradients are dropped.
  StepTotals finish_step(int64_t step, float lr, const TrainStepResult& local, int64_t local_rows,
                         int64_t global_rows, bool stop_requested, bool checkpoint_due);

  // Going back to a checkpoint (StepRunner::abandon_ahead). abandon_step completes a step whose
  // rows were requested but that will not be trained (no gradients); restart_steps makes the
  // next request_rows, whatever its step number, continue the row exchange's sequence after the
  // last step it completed (the exchange counts steps on; the model's step numbers go back);
  // tables_restored, once the model's tables hold the checkpoint's rows, refreshes what the
  // exchange serves from (a GPU rank's host copy).
  void abandon_step(int64_t step);
  void restart_steps();
  void tables_restored();

  // Checkpoint pieces. write_shard saves this rank's part (owned tail rows of the tables and
  // their accumulators, its rows of the carried state) beside the checkpoints folder and
  // returns the path; rank 0 adopts every rank's file into the step folder (shard_files).
  std::string write_shard(const std::string& run_dir, int64_t step, const LstmState* states,
                          int dirs) const;
  std::vector<std::pair<std::string, std::string>> shard_files(const std::string& run_dir,
                                                                int64_t step) const;
  // A checkpoint that could not be written: removes this rank's pending shard of `step` (rank 0:
  // every rank's), so that nothing half-written stays beside the checkpoints.
  void discard_shards(const std::string& run_dir, int64_t step) const;
  // In place of a barrier named `name`: every rank says how its part of a collective write went
  // (`mine`: its error, "" when it went well); returns the first failure in rank order
  // ("rank R: ...") or "" when every rank succeeded, the same on every rank.
  std::string agree_on_errors(const std::string& name, const std::string& mine);
  // Rank 0's part: dense tensors whole, the tables' hot rows; plus state.json's "shards" entry.
  NamedTensors replicated_model_tensors() const;
  NamedTensors replicated_optimizer_tensors() const;
  nlohmann::json shards_state() const;

  // Bytes this rank holds for the sparse tables (values and optimizer state; a GPU rank's host
  // working copies on the host side).
  struct TableBytes {
    int64_t host = 0, device = 0;
  };
  TableBytes table_bytes() const;

  // Sums over every rank (Gloo, host memory): a sharded model's distributed evaluation
  // (BiLM::evaluate). Collective, from one thread at a time.
  RankSum& rank_sum();

  // The run ended cleanly on this rank (after its final checkpoint): closes the row exchange
  // and says goodbye to the rendezvous.
  void finish();

  // Message for an error raised while talking to peers: names the lost rank when the
  // rendezvous knows of one (waits briefly for its verdict).
  std::string explain(const std::exception& error) const;

 private:
  // How many of `ascending_ids` are hot (ids < hot_rows): they form a prefix.
  size_t hot_prefix(const std::vector<int32_t>& ascending_ids) const;
  // The step's scalars summed over ranks (owners' squared norm of owned_sums_, the loss sums,
  // the stop and checkpoint flags) and the global norm with `replicated_sq` added.
  StepTotals reduce_totals(double replicated_sq, const TrainStepResult& local, int64_t local_rows,
                           int64_t global_rows, bool stop_requested, bool checkpoint_due);
  // Table t's gradient for the optimizer: every hot row (from `hot_block`, on the table's
  // device) and the owned tail sums, as ascending SparseRows.
  void set_table_gradient(size_t t, const float* hot_block);
  bool is_table(const Parameter& p) const;
  // The pieces of finish_step that differ by device. sum_bucket: `count` floats of the bucket
  // summed over ranks (GPU ranks: NCCL in pieces of at most kNcclBucketBytes; CPU ranks: Gloo).
  // bucket_sum_of_squares: of its first `count` floats, in double (on the device for GPU
  // ranks, one read-back; in order on the host for CPU ranks).
  void sum_bucket(float* from, int64_t count);
  double bucket_sum_of_squares(int64_t count) const;
  // GPU ranks: copies the remote rows fetched for `step` from the host copy to the device; after
  // an update, the owned rows just updated from the device into the host copy.
  // Exchange step seq's remote rows take the step caches of the sharded tables (their slots).
  void place_fetched_rows(int64_t seq);
  void upload_fetched_rows(int64_t step);
  void refresh_host_rows();

  Topology topology_;
  int device_id_ = -1;
  double timeout_s_;
  std::unique_ptr<RankSession> session_;
  std::unique_ptr<DenseAllreduce> allreduce_;
  std::unique_ptr<RankSum> rank_sum_;
  std::unique_ptr<SparseExchange> exchange_;
  BiLM* model_ = nullptr;
  Optimizer* optimizer_ = nullptr;
  int64_t hot_rows_ = 0;
  std::vector<Parameter*> dense_;   // the overlap groups' parameters in group order, then the rest
  int64_t late_offset_ = 0;         // bucket floats reduced by overlap_; the rest after backward
  std::unique_ptr<DenseOverlap> overlap_;
  std::vector<Parameter*> tables_;  // embedding.weight, softmax.weight, softmax.bias
  std::vector<const RowSlots*> slots_;  // per table: where its ids live (model/row_layout.h)
  // Rows of table t that hold `ids` (every one held here).
  std::vector<int32_t> slots_of(size_t t, const std::vector<int32_t>& ids) const;
  Tensor bucket_;  // f32 on the model's device: dense gradients, then each table's hot block
  std::vector<std::vector<int32_t>> needed_;  // per table, scratch of request_rows
  std::vector<uint8_t> seen_;                 // [V] scratch, all zero between calls
  std::vector<SummedRows> owned_sums_;        // gradient sums of the owned tail rows, reused
  std::vector<Tensor> grad_values_;           // per table, reused sparse-gradient values
  int ranks_on_host_ = 0;
  // The row exchange's step of model step k is k + exchange_offset_ (0 until a return to a
  // checkpoint); last_exchange_step_ is the last one completed.
  int64_t exchange_step(int64_t step) const { return step + exchange_offset_; }
  int64_t exchange_offset_ = 0;
  int64_t last_exchange_step_ = -1;
  bool restart_ = false;

  // GPU ranks only (model on a CUDA device).
  bool on_gpu_ = false;
  std::unique_ptr<DenseAllreduce> nccl_;           // sums the bucket
  std::vector<std::vector<float>> host_tables_;    // per table, SparseExchange's values
  // Every rank: per step parity, per table, the remote ids asked for (placed in the step caches
  // at wait_rows; GPU ranks upload them after it).
  std::vector<std::vector<int32_t>> fetched_[2];
};

// Largest piece of the device bucket handed to one NCCL all-reduce (25 MB of f32).
constexpr int64_t kNcclBucketBytes = 25 << 20;

// GPU ranks' host-side bookkeeping (pure, testable without a GPU): the ids of `requested`
// (ascending) that are neither hot (< hot_rows) nor owned by `own`, i.e. the rows a step
// fetched from other ranks.
std::vector<int32_t> remote_ids(const std::vector<int32_t>& requested, int64_t hot_rows,
                                const TailShard& own);
// Splits `count` floats into consecutive pieces of at most max_bytes (>= 1 float each):
// (offset, count) pairs covering [0, count) in order.
std::vector<std::pair<int64_t, int64_t>> bucket_pieces(int64_t count, int64_t max_bytes);

}  // namespace elmo
