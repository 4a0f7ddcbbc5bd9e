// SparseExchange: the row-sharded tails of the sparse tables (embedding [V, E], softmax weight
// [V, P], softmax bias [V]) over UCX active messages. Per training step a rank fetches the
// remote tail rows it needs from their owners, computes, and pushes one gradient row per unique
// id to the owner; owners receive every rank's contribution and get the rank-order sums back.
// What it is not: an optimizer (the caller applies Adagrad to its owned rows), the sync of the
// replicated hot head (ids < hot_rows: dense all-reduce, comm/dense_allreduce), a rendezvous
// (it only reads and writes a KvStore) or a GPU path (host memory only; stage device rows).
//
// Ownership. Table t's tail [hot_rows, rows) is dealt round-robin: rank r owns the ids
// hot_rows + r, hot_rows + r + world, hot_rows + r + 2 world, ... (TailShard). The vocabulary is
// ordered by frequency, so contiguous ranges would give the lowest ranks the most used rows
// (bench_comm_model: the busiest owner served 16-26x the mean at elmo-1b sizes); dealing the
// rows out spreads every frequency band evenly. Every rank keeps
// a working copy `values` (row-major f32, host memory) whose row for id i is slots[i] (a
// compacted table: hot head, owned rows, step cache; model/row_layout.h) or i (a full-size
// [rows, dim] copy). Authoritative there: the hot rows (kept in sync elsewhere) and this rank's
// owned rows. Other tail rows hold the values fetched for the current step and are valid only
// between wait_rows(k) and the update of step k.
//
// Step protocol. Every rank makes the same calls for the same consecutive steps (the first step
// may be any number, e.g. a resumed run's). Per step k:
//   request_rows(k, ids_k)     (done one step early when prefetching, see below)
//   wait_rows(k)               remote rows of ids_k are now in `values`, with the update of k-1
//   request_rows(k + 1, ...)   optional prefetch: overlaps the compute of step k
//   ... compute ...
//   exchange_gradients(k, g)   returns the rank-order sums for this rank's owned rows
//   ... the caller updates those owned rows (after its grad-norm all-reduce, say) ...
//   rows_updated(k)
// Without prefetch, request_rows(k) comes right before wait_rows(k). Id lists may be empty.
// Calls out of this order throw Error naming the expected call.
//
// Exactness (what makes prefetch safe). A request for step k+1 can reach an owner before the
// owner's update of step k. The owner answers at once with its current rows (they include the
// update of k-1: the requester sent it after wait_rows(k), which waited for every owner's
// completion of k-1) and remembers the ids. Between exchange_gradients(k) returning and
// rows_updated(k) the owner defers every request (its rows are being written). rows_updated(k)
// sends every peer a "step k complete" message carrying the new values of the rows that peer
// asked for step k+1 before the update AND that got a summed gradient at step k, then answers
// the deferred requests. wait_rows(k+1) returns once it has every owner's reply for k+1 and
// every owner's completion of k (none needed at a rank's first step); it copies replies first,
// then the refreshed rows. So a fetched row always equals the owner's row after update k,
// bit for bit. This assumes the caller changes exactly the owned rows returned by
// exchange_gradients(k) between that call and rows_updated(k), and owned rows at no other time.
//
// Rank-order sum. For each owned id, the contributions of the ranks that sent that id are added
// in rank order, the owner's own at its rank position: s = g_a; s += g_b; s += g_c ... (first
// contributor copied, then element-wise f32 adds), so the result is bitwise reproducible.
//
// Threads. One comm thread owns the UCX worker and makes every UCX call (progress, answering
// fetch requests from `values`, collecting contributions); the caller's thread talks to it
// through queues and condition variables. Only the caller's thread writes `values` (fetched
// rows, inside wait_rows); the comm thread reads owned rows outside the update window.
// `values` must hold the initial rows when the constructor is called: peers may fetch as soon
// as their own constructor returns.
//
// UCX (host memory only). One context (feature AM + WAKEUP), one worker, endpoints to every
// peer from the worker addresses published under "<key_prefix>/<rank>/addr", with peer error
// handling: a failed peer makes every pending and later call throw PeerLost naming it. UCX
// settings come from the UCX_* environment; when UCX_TLS is unset and all ranks are on this
// host (topology local_size == world_size) the transports default to tcp over lo (shared memory
// is dropped by peer error handling anyway), UCX_NET_DEVICES likewise to lo when unset.
// No RMA and no published rkeys: a fetch is an active-message request answered by the owner's
// comm thread, which is what a get over TCP becomes anyway (the owner's progress emulates it),
// and it lets the owner order reads after its update. Requested rows are scattered, so replies
// are gathered into staging buffers registered with ucp_mem_map (reused; large messages go by
// rendezvous from registered memory) rather than sent from `values` itself; the gather also
// frees the caller to write its rows as soon as exchange_gradients returns.
//
// Failures. Every wait is bounded by timeout_s: CommError naming the call, the step and the
// ranks whose messages are missing. A peer whose endpoint fails (process died, connection
// reset) makes the current and every later call throw PeerLost(rank) within about a second.
// Messages carry their step and sender; a message that does not fit the protocol (wrong step,
// duplicate, ids this rank does not own, different tables) is a CommError "protocol error".
// A rank that fails and destroys its SparseExchange without close() drops its connections, so
// its peers then see it as lost: the first rank's own message names the cause.
//
// World size 1: no UCX and no thread; every call is local (exchange_gradients returns the
// caller's own tail rows).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "comm/kv_store.h"
#include "comm/topology.h"

namespace elmo {

struct SparseTable {
  std::string name;  // for messages ("embedding.weight")
  float* values;     // row-major host memory, [rows, dim] or compacted (see slots)
  int64_t rows;      // V (< 2^31: ids travel as int32)
  int64_t dim;       // floats per row (E, P, or 1 for the bias)
  int64_t hot_rows;  // ids < hot_rows are replicated and never exchanged here
  // Row of `values` that holds id i: slots[i] (host [rows], model/row_layout.h RowSlots), or i
  // itself when null. Owned ids must map to fixed rows; the ids requested for step k must map
  // to their rows from wait_rows(k) on (the caller places them before calling it).
  const int32_t* slots = nullptr;

  float* row(int64_t id) const { return values + (slots ? slots[id] : id) * dim; }
};

struct SparseExchangeOptions {
  double timeout_s = 120.0;        // any single wait longer than this throws CommError
  std::string key_prefix = "ucx";  // KvStore keys "<key_prefix>/<rank>/addr"
};

// Per table: owned ids (ascending) that got any contribution and their rank-order sums
// [ids.size(), dim] row-major.
struct SummedRows {
  std::vector<int32_t> ids;
  std::vector<float> values;
};

// Cumulative counters of this rank. Rows and payload bytes (ids + values + per-table counts,
// without UCX or message headers). Seconds are wall time blocked in the named call.
struct SparseExchangeStats {
  int64_t steps = 0;         // rows_updated calls
  int64_t rows_fetched = 0;  // remote rows received in fetch replies
  int64_t bytes_fetched = 0;
  int64_t rows_refreshed = 0;  // rows received again in step completions
  int64_t bytes_refreshed = 0;
  int64_t rows_served = 0;  // rows sent as owner (replies + refreshes)
  int64_t bytes_served = 0;
  int64_t rows_pushed = 0;  // gradient rows sent to other owners
  int64_t bytes_pushed = 0;
  int64_t rows_received = 0;  // gradient rows received from other ranks for owned rows
  int64_t bytes_received = 0;
  int64_t bytes_requested = 0;    // id lists sent in fetch requests
  int64_t requests_deferred = 0;  // fetch requests that arrived during an update window
  double wait_rows_s = 0.0;       // blocked in wait_rows (waiting for replies/completions)
  double apply_rows_s = 0.0;      // copying fetched rows into `values` in wait_rows
  double exchange_wait_s = 0.0;   // blocked in exchange_gradients waiting for contributions
  double exchange_sum_s = 0.0;    // summing contributions in exchange_gradients
  double rows_updated_s = 0.0;    // gathering refreshes and deferred replies in rows_updated
};

// The tail ids one rank owns in one table: hot_rows + rank + i * world_size for
// 0 <= i < count(), ascending. A pure function of the table shape and the world (testable in one
// process); checkpoint shards store these rows in this order.
struct TailShard {
  int64_t rows = 0;      // V
  int64_t hot_rows = 0;  // ids below are replicated, owned by nobody
  int rank = 0;
  int world_size = 1;

  int64_t count() const {
    const int64_t tail = rows - hot_rows;
    return tail > rank ? (tail - rank + world_size - 1) / world_size : 0;
  }
  int64_t id(int64_t i) const { return hot_rows + rank + i * world_size; }
  bool owns(int64_t id) const {
    return id >= hot_rows && id < rows && (id - hot_rows) % world_size == rank;
  }
  // Position of an owned id in the shard's order.
  int64_t index(int64_t id) const { return (id - hot_rows) / world_size; }
};

// Throws Error for a bad shape (hot_rows outside [0, rows], rank outside the world).
TailShard tail_shard(int64_t rows, int64_t hot_rows, int rank, int world_size);
// Owner of `id` (0 <= id < rows); -1 for hot ids.
int tail_owner(int64_t rows, int64_t hot_rows, int world_size, int64_t id);

class SparseExchange {
 public:
  // Validates the tables, connects to every peer (publishing this rank's UCX worker address in
  // `store`, reading the peers') and checks that every rank passed the same table shapes.
  // Collective: every rank constructs it with the same tables. Throws CommError on timeouts.
  SparseExchange(KvStore& store, const Topology& topo, std::vector<SparseTable> tables,
                 const SparseExchangeOptions& options = {});
  // Without close(): drops the connections at once (peers see this rank as lost); never hangs.
  ~SparseExchange();
  SparseExchange(const SparseExchange&) = delete;
  SparseExchange& operator=(const SparseExchange&) = delete;

  int num_tables() const;
  const SparseTable& table(int t) const;
  // The tail ids of table t this rank owns.
  TailShard owned_rows(int table) const;
  // Owning rank of `id` in table t; -1 for hot ids. Error when id is out of range.
  int owner(int table, int64_t id) const;

  // Asks the owners for the remote tail rows of ids_per_table[t] (ascending unique ids in
  // [0, rows); hot and own ids are allowed and skipped). Non-blocking.
  void request_rows(int64_t step, const std::vector<std::vector<int32_t>>& ids_per_table);
  // Blocks until every row requested for `step` is in `values` with the update of step-1.
  void wait_rows(int64_t step);
  // Per table: ascending unique ids (any; hot ids are ignored) and their gradient rows
  // [ids.size(), dim]. Sends each owner its rows (every owner gets a message, maybe empty) and
  // blocks until every rank's contribution for this rank's rows has arrived. Returns, per table,
  // the rank-order sums of the owned rows that got any contribution. The caller may then write
  // those owned rows, and must call rows_updated(step) when done.
  using GradientRows = std::vector<std::pair<const std::vector<int32_t>*, const float*>>;
  std::vector<SummedRows> exchange_gradients(int64_t step, const GradientRows& grads_per_table);
  // The same, writing the sums into `sums` and reusing its memory: pass the previous step's
  // result back in (a fresh [rows, dim] result per step costs page faults, tens of ms for
  // tens of MB).
  void exchange_gradients(int64_t step, const GradientRows& grads_per_table,
                          std::vector<SummedRows>& sums);
  // The caller has applied the update of `step` to its owned rows: sends the step completion
  // (with refreshed rows) to every peer and answers the deferred requests.
  void rows_updated(int64_t step);

  // Clean goodbye: tells every peer and waits (at most timeout_s) until every peer said
  // goodbye, then releases UCX. Throws PeerLost/CommError when a peer is missing; the
  // connections are released either way. Further calls except stats() throw.
  void close();

  const SparseExchangeStats& stats() const;

  class Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace elmo
