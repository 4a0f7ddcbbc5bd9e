// Private to comm/sparse_exchange*.cpp: the state of a SparseExchange. sparse_exchange.cpp holds
// setup, teardown and the caller-side calls; sparse_exchange_comm.cpp the comm thread.
// Which thread touches what is marked on each group of members.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include "comm/sparse_exchange.h"
#include "comm/sparse_exchange_wire.h"
#include "comm/ucx_util.h"
#include "runtime/error.h"

namespace elmo {

namespace sparse_detail {

using Clock = std::chrono::steady_clock;
inline double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// After the last piece of work the comm thread keeps polling this long before it sleeps on
// the worker's event fd (saves a wakeup when messages come in bursts).
constexpr double kCommSpinSeconds = 50e-6;

using IdLists = std::vector<std::vector<int32_t>>;  // [table] -> ascending ids
// "rank 2" / "ranks 1, 3"
std::string rank_list(const std::vector<int>& ranks);

}  // namespace sparse_detail

class SparseExchange::Impl {
 public:
  Impl(KvStore& store, const Topology& topo, std::vector<SparseTable> tables,
       const SparseExchangeOptions& options);
  ~Impl();

  int num_tables() const { return static_cast<int>(tables_.size()); }
  const SparseTable& table(int t) const {
    check_table(t);
    return tables_[t];
  }
  TailShard owned_rows(int t) const {
    check_table(t);
    return owned_[t];
  }
  int owner(int t, int64_t id) const;

  void request_rows(int64_t step, const std::vector<std::vector<int32_t>>& ids_per_table);
  void wait_rows(int64_t step);
  void exchange_gradients(int64_t step, const GradientRows& grads_per_table,
                          std::vector<SummedRows>& sums);
  void rows_updated(int64_t step);
  void close();
  const SparseExchangeStats& stats() const;

 private:
  // A send or a rendezvous receive in flight (owned by the comm thread).
  struct Op {
    Impl* self = nullptr;
    bool is_send = true;
    int peer = -1;
    sparse_wire::MsgHeader header;
    BufferRef payload;
    void* request = nullptr;
    ucs_status_t status = UCS_OK;
  };
  // A message handed over by the active-message callback.
  struct Incoming {
    sparse_wire::MsgHeader header;
    std::string header_error;   // "" when the header is valid
    BufferRef payload;          // eager data (copied in the callback)
    void* rndv_desc = nullptr;  // rendezvous data still to be received
    size_t length = 0;
  };
  struct EpError {
    int peer;
    ucp_ep_h ep;
    ucs_status_t status;
  };
  struct PeerSlot {
    Impl* self;
    int rank;
  };
  struct Outgoing {
    int peer;
    sparse_wire::MsgKind kind;
    int64_t step;
    BufferRef payload;
  };
  struct FetchRequest {
    int peer;
    int64_t step;
    sparse_detail::IdLists ids;
  };
  using Staged = std::map<int64_t, std::vector<BufferRef>>;  // [step][peer]

  // --- caller side
  void check_table(int t) const;
  void check_usable(const char* call) const;
  void check_ids(const char* call, int64_t step, int t, std::span<const int32_t> ids) const;
  // [table][rank]: the ids each rank owns of a list, and their positions in it.
  struct OwnerSplit {
    std::vector<std::vector<std::vector<int32_t>>> ids, positions;
  };
  void split_by_owner(const std::vector<std::span<const int32_t>>& ids, OwnerSplit& split) const;
  std::vector<sparse_wire::RowsSource> owner_sources(const OwnerSplit& split,
                                                     const std::vector<const float*>& rows,
                                                     int rank) const;
  BufferRef encode_rows(const std::vector<sparse_wire::RowsSource>& sources, bool with_values);
  void enqueue(std::vector<Outgoing> messages);
  void throw_if_failed(const char* call, int64_t step) const;  // mu_ held
  template <typename Ready, typename Missing>
  void wait_until(std::unique_lock<std::mutex>& lock, const char* call, int64_t step, Ready ready,
                  Missing missing);
  std::vector<int> missing_in(const Staged& staged, int64_t step) const;  // mu_ held
  // Throws when a message older than `first_valid` is staged (its sender is out of step).
  void check_stale(const Staged& staged, int64_t first_valid, const char* what, const char* call,
                   int64_t step) const;  // mu_ held
  void shutdown(bool graceful);

  // --- comm thread
  void comm_main();
  void run_loop();
  void connect_peers(const std::vector<std::string>& addresses);
  void send(int peer, sparse_wire::MsgKind kind, int64_t step, BufferRef payload);
  bool handle_incoming();
  bool handle_completions();
  bool handle_ep_errors();
  void dispatch(const sparse_wire::MsgHeader& header, BufferRef payload);
  void answer_request(int peer, int64_t step, BufferRef payload);
  void peer_failed(int peer, ucs_status_t status, const std::string& what);
  void protocol_error(int peer, const std::string& what);
  void close_endpoints(bool graceful);
  void wake();
  static ucs_status_t on_am(void* arg, const void* header, size_t header_length, void* data,
                            size_t length, const ucp_am_recv_param_t* param);
  static void on_send_done(void* request, ucs_status_t status, void* user_data);
  static void on_recv_done(void* request, ucs_status_t status, size_t length, void* user_data);
  static void on_ep_error(void* arg, ucp_ep_h ep, ucs_status_t status);

  // --- fixed after construction
  Topology topo_;
  std::vector<SparseTable> tables_;
  SparseExchangeOptions options_;
  std::vector<TailShard> owned_;                // [table] this rank's tail ids
  std::vector<std::vector<TailShard>> shards_;  // [table][rank] every rank's tail ids
  std::string label_;                          // "rank 1/4"
  std::string descriptor_;

  // --- caller thread only
  std::optional<int64_t> requested_, waited_, exchanged_, updated_;
  std::map<int64_t, std::vector<sparse_detail::IdLists>> requested_ids_;  // [step][peer][table]
  sparse_detail::IdLists updated_ids_;  // [table] sums of the last exchange
  OwnerSplit split_;                    // scratch of request_rows and exchange_gradients
  SparseExchangeStats stats_;
  mutable SparseExchangeStats merged_stats_;
  bool closed_ = false;

  // --- UCX objects: made and used by the comm thread; torn down after it has been joined.
  std::unique_ptr<UcxWorker> ucx_;
  std::unique_ptr<StagingPool> pool_;
  std::thread thread_;
  int wake_fd_ = -1;

  // --- comm thread only
  std::vector<ucp_ep_h> eps_;
  std::vector<PeerSlot> slots_;
  std::vector<Incoming> incoming_;
  std::vector<Op*> completed_;
  std::vector<EpError> ep_errors_;
  std::unordered_set<Op*> in_flight_;
  std::vector<void*> closing_;  // ep close requests
  std::atomic<int64_t> served_rows_{0}, served_bytes_{0}, deferred_count_{0};

  // --- shared, under mu_
  mutable std::mutex mu_;
  std::condition_variable cv_;
  enum class Init { kStarting, kReady, kFailed } init_ = Init::kStarting;
  std::string address_;                  // this worker's address (set by the comm thread)
  std::vector<std::string> connect_to_;  // peer addresses (set by the caller)
  std::deque<Outgoing> outbox_;
  bool stop_ = false, graceful_ = false;
  std::string fatal_;  // first protocol/UCX failure
  int first_lost_ = -1;
  std::string lost_message_;
  std::vector<char> lost_, bye_;  // [peer]
  std::vector<BufferRef> hello_;  // [peer]
  Staged replies_, done_, grads_;
  std::optional<int64_t> update_step_, last_updated_;  // owner state
  int readers_ = 0;                       // comm-thread gathers from owned rows in progress
  std::vector<FetchRequest> remembered_;  // answered before this rank's next update
  std::vector<FetchRequest> deferred_;    // arrived during the update window
};

// Waits on cv_ until ready() (mu_ held through `lock`), throwing the failure a peer or the
// comm thread recorded, or a CommError naming missing() after options_.timeout_s.
template <typename Ready, typename Missing>
void SparseExchange::Impl::wait_until(std::unique_lock<std::mutex>& lock, const char* call,
                                      int64_t step, Ready ready, Missing missing) {
  using sparse_detail::Clock;
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                           std::chrono::duration<double>(options_.timeout_s));
  while (true) {
    throw_if_failed(call, step);
    if (ready()) return;
    if (cv_.wait_until(lock, deadline) == std::cv_status::timeout) {
      throw_if_failed(call, step);
      if (ready()) return;
      throw CommError(str("SparseExchange (", label_, "): ", call, " at step ", step,
                          " timed out after ", options_.timeout_s, " s waiting for ", missing(),
                          "; those ranks are stuck, dead or not making the same calls for the "
                          "same steps (check their logs; raise timeout_s if they are just slow)"));
    }
  }
}

}  // namespace elmo
