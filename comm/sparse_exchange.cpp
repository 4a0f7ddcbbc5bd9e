// SparseExchange: the wire format, the caller-side step protocol, the owner side (answering,
// deferring and refreshing fetches) and the comm thread that owns the UCX worker.
// Semantics are documented in sparse_exchange.h; this file only says how.
#include "comm/sparse_exchange.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <map>
#include <mutex>
#include <optional>
#include <span>
#include <sstream>
#include <thread>
#include <unordered_set>

#include "comm/ucx_util.h"
#include "runtime/error.h"
#include "runtime/log.h"

namespace elmo {

RowRange tail_rows(int64_t rows, int64_t hot_rows, int rank, int world_size) {
  ELMO_CHECK(0 <= hot_rows && hot_rows <= rows, "hot_rows ", hot_rows, " outside [0, ", rows,
             "]");
  const RowRange tail = rank_rows(rows - hot_rows, rank, world_size);
  return {tail.begin + hot_rows, tail.end + hot_rows};
}

int tail_owner(int64_t rows, int64_t hot_rows, int world_size, int64_t id) {
  ELMO_CHECK(world_size > 0 && 0 <= hot_rows && hot_rows <= rows, "bad table shape: rows ",
             rows, ", hot_rows ", hot_rows, ", world ", world_size);
  ELMO_CHECK(0 <= id && id < rows, "id ", id, " is out of range [0, ", rows, ")");
  if (id < hot_rows) return -1;
  // Inverse of even_part: the first `extra` ranks hold base + 1 rows, the others base.
  const int64_t tail = rows - hot_rows, position = id - hot_rows;
  const int64_t base = tail / world_size, extra = tail % world_size;
  const int64_t in_big = extra * (base + 1);
  if (position < in_big) return static_cast<int>(position / (base + 1));
  return static_cast<int>(extra + (position - in_big) / base);  // base > 0 here
}

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

constexpr uint32_t kMagic = 0x454c4d58;  // "ELMX"
constexpr unsigned kAmId = 7;
// After the last piece of work the comm thread keeps polling this long before it sleeps on
// the worker's event fd (saves a wakeup when messages come in bursts).
constexpr double kSpinSeconds = 50e-6;

enum class MsgKind : uint32_t {
  kHello = 1,         // payload: table descriptor text
  kFetchRequest = 2,  // rows payload without values: the ids asked for
  kFetchReply = 3,    // rows payload: the ids asked for and their values
  kStepDone = 4,      // rows payload: refreshed rows of the requester's next step
  kGradients = 5,     // rows payload: gradient rows for the receiver's owned ids
  kGoodbye = 6,       // no payload
};
constexpr uint32_t kLastKind = 6;

const char* kind_name(uint32_t kind) {
  switch (static_cast<MsgKind>(kind)) {
    case MsgKind::kHello: return "hello";
    case MsgKind::kFetchRequest: return "fetch request";
    case MsgKind::kFetchReply: return "fetch reply";
    case MsgKind::kStepDone: return "step completion";
    case MsgKind::kGradients: return "gradients";
    case MsgKind::kGoodbye: return "goodbye";
  }
  return "unknown";
}

// Active-message header. In UCX 1.13 it must stay valid until the send completes, so it lives
// in the Op of the send.
struct MsgHeader {
  uint32_t magic = kMagic;
  uint32_t kind = 0;
  int64_t step = 0;
  int32_t src = 0;
  int32_t num_tables = 0;
  uint64_t payload_bytes = 0;
};

// Rows payload: int64 counts[num_tables]; int32 ids[sum of counts] (table after table);
// then, when the message carries rows, f32 values[sum of counts_t * dim_t] (table after table).
struct RowsSource {
  std::span<const int32_t> ids;
  const float* rows = nullptr;  // [ids.size(), dim] contiguous; nullptr: gather table values
};

struct RowsView {
  std::vector<std::span<const int32_t>> ids;  // [table]
  std::vector<const float*> values;           // [table] -> [ids.size(), dim] or nullptr
  int64_t rows = 0;                           // total ids over tables
};

size_t rows_payload_bytes(const std::vector<SparseTable>& tables,
                          const std::vector<RowsSource>& sources, bool with_values) {
  size_t bytes = tables.size() * sizeof(int64_t);
  for (size_t t = 0; t < tables.size(); ++t) {
    bytes += sources[t].ids.size() * sizeof(int32_t);
    if (with_values) bytes += sources[t].ids.size() * tables[t].dim * sizeof(float);
  }
  return bytes;
}

void write_rows(StagingBuffer& buffer, const std::vector<SparseTable>& tables,
                const std::vector<RowsSource>& sources, bool with_values) {
  char* out = buffer.data;
  for (size_t t = 0; t < tables.size(); ++t) {
    const int64_t count = static_cast<int64_t>(sources[t].ids.size());
    std::memcpy(out, &count, sizeof count);
    out += sizeof count;
  }
  for (size_t t = 0; t < tables.size(); ++t) {
    const size_t bytes = sources[t].ids.size() * sizeof(int32_t);
    if (bytes > 0) std::memcpy(out, sources[t].ids.data(), bytes);
    out += bytes;
  }
  if (with_values) {
    for (size_t t = 0; t < tables.size(); ++t) {
      const size_t row_bytes = tables[t].dim * sizeof(float);
      const auto& source = sources[t];
      if (source.rows != nullptr) {
        const size_t bytes = source.ids.size() * row_bytes;
        if (bytes > 0) std::memcpy(out, source.rows, bytes);
        out += bytes;
      } else {
        for (const int32_t id : source.ids) {
          std::memcpy(out, tables[t].values + id * tables[t].dim, row_bytes);
          out += row_bytes;
        }
      }
    }
  }
  ELMO_CHECK(static_cast<size_t>(out - buffer.data) == buffer.size, "rows payload size");
}

// Parses a rows payload; returns "" or what is wrong with it.
std::string parse_rows(const StagingBuffer* buffer, const std::vector<SparseTable>& tables,
                       bool with_values, RowsView* view) {
  const size_t num_tables = tables.size();
  const size_t bytes = buffer == nullptr ? 0 : buffer->size;
  if (bytes < num_tables * sizeof(int64_t))
    return str("payload of ", bytes, " bytes is shorter than its ", num_tables, " counts");
  const char* in = buffer->data;
  std::vector<int64_t> counts(num_tables);
  std::memcpy(counts.data(), in, num_tables * sizeof(int64_t));
  in += num_tables * sizeof(int64_t);
  size_t expected = num_tables * sizeof(int64_t);
  for (size_t t = 0; t < num_tables; ++t) {
    if (counts[t] < 0 || counts[t] > tables[t].rows)
      return str("table ", t, " count ", counts[t], " outside [0, ", tables[t].rows, "]");
    expected += counts[t] * sizeof(int32_t);
    if (with_values) expected += counts[t] * tables[t].dim * sizeof(float);
  }
  if (bytes != expected)
    return str("payload has ", bytes, " bytes but its counts need ", expected);
  view->ids.resize(num_tables);
  view->values.assign(num_tables, nullptr);
  view->rows = 0;
  for (size_t t = 0; t < num_tables; ++t) {
    view->ids[t] = {reinterpret_cast<const int32_t*>(in), static_cast<size_t>(counts[t])};
    in += counts[t] * sizeof(int32_t);
    view->rows += counts[t];
  }
  if (with_values) {
    for (size_t t = 0; t < num_tables; ++t) {
      view->values[t] = reinterpret_cast<const float*>(in);
      in += counts[t] * tables[t].dim * sizeof(float);
    }
  }
  return "";
}

// "" when ids are ascending, unique and inside [begin, end); else what is wrong.
std::string check_id_run(std::span<const int32_t> ids, int64_t begin, int64_t end) {
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < begin || ids[i] >= end)
      return str("id ", ids[i], " at position ", i, " is outside [", begin, ", ", end, ")");
    if (i > 0 && ids[i] <= ids[i - 1])
      return str("ids are not ascending and unique: position ", i, " holds ", ids[i],
                 " after ", ids[i - 1]);
  }
  return "";
}

std::string rank_list(const std::vector<int>& ranks) {
  std::ostringstream os;
  os << (ranks.size() == 1 ? "rank " : "ranks ");
  for (size_t i = 0; i < ranks.size(); ++i) os << (i > 0 ? ", " : "") << ranks[i];
  return os.str();
}

std::string table_descriptor(const std::vector<SparseTable>& tables, int world_size) {
  std::string text = str("world_size=", world_size, "\n");
  for (const auto& table : tables)
    text += str("'", table.name, "' rows=", table.rows, " dim=", table.dim,
                " hot_rows=", table.hot_rows, "\n");
  return text;
}

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

using IdLists = std::vector<std::vector<int32_t>>;  // [table] -> ascending ids

}  // namespace

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
  RowRange owned_rows(int t) const {
    check_table(t);
    return owned_[t];
  }
  int owner(int t, int64_t id) const;

  void request_rows(int64_t step, const std::vector<std::vector<int32_t>>& ids_per_table);
  void wait_rows(int64_t step);
  std::vector<SummedRows> exchange_gradients(
      int64_t step,
      const std::vector<std::pair<const std::vector<int32_t>*, const float*>>& grads_per_table);
  void rows_updated(int64_t step);
  void close();
  const SparseExchangeStats& stats() const;

 private:
  // A send or a rendezvous receive in flight (owned by the comm thread).
  struct Op {
    Impl* self = nullptr;
    bool is_send = true;
    int peer = -1;
    MsgHeader header;
    BufferRef payload;
    void* request = nullptr;
    ucs_status_t status = UCS_OK;
  };
  // A message handed over by the active-message callback.
  struct Incoming {
    MsgHeader header;
    std::string header_error;  // "" when the header is valid
    BufferRef payload;         // eager data (copied in the callback)
    void* rndv_desc = nullptr; // rendezvous data still to be received
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
    MsgKind kind;
    int64_t step;
    BufferRef payload;
  };
  struct FetchRequest {
    int peer;
    int64_t step;
    IdLists ids;
  };
  using Staged = std::map<int64_t, std::vector<BufferRef>>;  // [step][peer]

  // --- caller side
  void check_table(int t) const;
  void check_usable(const char* call) const;
  void check_ids(const char* call, int64_t step, int t, std::span<const int32_t> ids) const;
  std::vector<RowsSource> owned_slices(const std::vector<std::span<const int32_t>>& ids,
                                       const std::vector<const float*>& rows, int rank) const;
  BufferRef encode_rows(const std::vector<RowsSource>& sources, bool with_values);
  void enqueue(std::vector<Outgoing> messages);
  void throw_if_failed(const char* call, int64_t step) const;  // mu_ held
  template <typename Ready, typename Missing>
  void wait_until(std::unique_lock<std::mutex>& lock, const char* call, int64_t step,
                  Ready ready, Missing missing);
  std::vector<int> missing_in(const Staged& staged, int64_t step) const;  // mu_ held
  void shutdown(bool graceful);

  // --- comm thread
  void comm_main();
  void run_loop();
  void connect_peers(const std::vector<std::string>& addresses);
  void send(int peer, MsgKind kind, int64_t step, BufferRef payload);
  bool handle_incoming();
  bool handle_completions();
  bool handle_ep_errors();
  void dispatch(const MsgHeader& header, BufferRef payload);
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
  std::vector<RowRange> owned_;             // [table] this rank's tail ids
  std::vector<std::vector<RowRange>> ranges_;  // [table][rank] every rank's tail ids
  std::string label_;                       // "rank 1/4"
  std::string descriptor_;

  // --- caller thread only
  std::optional<int64_t> requested_, waited_, exchanged_, updated_;
  std::map<int64_t, std::vector<IdLists>> requested_ids_;  // [step][peer][table]
  IdLists updated_ids_;                                    // [table] sums of the last exchange
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
  std::string address_;                   // this worker's address (set by the comm thread)
  std::vector<std::string> connect_to_;   // peer addresses (set by the caller)
  std::deque<Outgoing> outbox_;
  bool stop_ = false, graceful_ = false;
  std::string fatal_;                     // first protocol/UCX failure
  int first_lost_ = -1;
  std::string lost_message_;
  std::vector<char> lost_, bye_;          // [peer]
  std::vector<BufferRef> hello_;          // [peer]
  Staged replies_, done_, grads_;
  std::optional<int64_t> update_step_, last_updated_;  // owner state
  int readers_ = 0;                       // comm-thread gathers from owned rows in progress
  std::vector<FetchRequest> remembered_;  // answered before this rank's next update
  std::vector<FetchRequest> deferred_;    // arrived during the update window
};

// ---------------------------------------------------------------------------------------------
// Construction and teardown

SparseExchange::Impl::Impl(KvStore& store, const Topology& topo, std::vector<SparseTable> tables,
                           const SparseExchangeOptions& options)
    : topo_(topo), tables_(std::move(tables)), options_(options) {
  label_ = str("rank ", topo_.rank, "/", topo_.world_size);
  if (topo_.world_size < 1 || topo_.rank < 0 || topo_.rank >= topo_.world_size)
    throw Error(str("SparseExchange: rank ", topo_.rank, " is not inside world size ",
                    topo_.world_size));
  if (!(options_.timeout_s > 0))
    throw Error(str("SparseExchange: timeout_s must be > 0 (got ", options_.timeout_s, ")"));
  if (tables_.empty()) throw Error("SparseExchange: no tables given");
  for (size_t t = 0; t < tables_.size(); ++t) {
    const SparseTable& table = tables_[t];
    const std::string what = str("SparseExchange (", label_, "): table ", t, " '", table.name, "'");
    if (table.rows <= 0 || table.rows > INT32_MAX)
      throw Error(str(what, " has ", table.rows, " rows; need 1 to 2^31-1 (ids travel as int32)"));
    if (table.dim <= 0) throw Error(str(what, " has dim ", table.dim, "; need dim >= 1"));
    if (table.hot_rows < 0 || table.hot_rows > table.rows)
      throw Error(str(what, " has hot_rows ", table.hot_rows, " outside [0, ", table.rows, "]"));
    if (table.values == nullptr) throw Error(str(what, " has no values (null pointer)"));
    owned_.push_back(tail_rows(table.rows, table.hot_rows, topo_.rank, topo_.world_size));
    std::vector<RowRange> per_rank;
    for (int r = 0; r < topo_.world_size; ++r)
      per_rank.push_back(tail_rows(table.rows, table.hot_rows, r, topo_.world_size));
    ranges_.push_back(std::move(per_rank));
  }
  updated_ids_.resize(tables_.size());
  descriptor_ = table_descriptor(tables_, topo_.world_size);
  const int world = topo_.world_size;
  if (world == 1) return;

  lost_.assign(world, 0);
  bye_.assign(world, 0);
  hello_.resize(world);
  eps_.assign(world, nullptr);
  for (int r = 0; r < world; ++r) slots_.push_back({this, r});
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0)
    throw CommError(str("SparseExchange (", label_, "): eventfd failed: ", std::strerror(errno)));
  thread_ = std::thread([this] { comm_main(); });

  try {
    std::unique_lock<std::mutex> lock(mu_);
    wait_until(lock, "construction (UCX setup)", 0, [&] { return init_ != Init::kStarting; },
               [] { return std::string("this rank's UCX worker"); });
    const std::string address = address_;
    lock.unlock();

    const std::string prefix = options_.key_prefix + "/";
    store.set(str(prefix, topo_.rank, "/addr"), address);
    std::vector<std::string> addresses(world);
    for (int r = 0; r < world; ++r)
      if (r != topo_.rank) addresses[r] = store.get(str(prefix, r, "/addr"), options_.timeout_s);

    lock.lock();
    connect_to_ = std::move(addresses);
    lock.unlock();
    wake();
    lock.lock();
    wait_until(
        lock, "construction (hello from every peer)", 0,
        [&] {
          for (int r = 0; r < world; ++r)
            if (r != topo_.rank && !hello_[r]) return false;
          return true;
        },
        [&] {
          std::vector<int> missing;
          for (int r = 0; r < world; ++r)
            if (r != topo_.rank && !hello_[r]) missing.push_back(r);
          return str("hello messages from ", rank_list(missing));
        });
    const std::vector<std::string> mine = split_lines(descriptor_);
    for (int r = 0; r < world; ++r) {
      if (r == topo_.rank) continue;
      const std::string theirs_text(hello_[r]->data, hello_[r]->size);
      const std::vector<std::string> theirs = split_lines(theirs_text);
      if (theirs == mine) continue;
      std::string difference;
      for (size_t i = 0; i < std::max(mine.size(), theirs.size()) && difference.empty(); ++i) {
        const std::string a = i < mine.size() ? mine[i] : "(nothing)";
        const std::string b = i < theirs.size() ? theirs[i] : "(nothing)";
        if (a != b) difference = str("here ", a, ", on rank ", r, " ", b);
      }
      lock.unlock();
      // Close with a flush, so that the peer also gets this rank's hello and reports the
      // mismatch itself instead of a lost peer.
      shutdown(true);
      throw CommError(str("SparseExchange (", label_, "): rank ", r,
                          " passed different sparse tables (", difference,
                          "); every rank must pass the same tables (name, rows, dim, hot_rows)"));
    }
    for (BufferRef& hello : hello_) hello.reset();
    lock.unlock();
    log_debug("SparseExchange ", label_, ": connected to ", world - 1, " peers (",
              ucx_->transports(), ")");
  } catch (...) {
    shutdown(false);
    throw;
  }
}

SparseExchange::Impl::~Impl() { shutdown(false); }

void SparseExchange::Impl::shutdown(bool graceful) {
  if (thread_.joinable()) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
      graceful_ = graceful;
    }
    wake();
    thread_.join();
  }
  // The comm thread is gone: tear down here, in an order that keeps UCX from touching freed
  // memory: worker (may still complete requests), then the buffers, then the context.
  if (ucx_) ucx_->destroy_worker();
  for (Op* op : completed_) in_flight_.erase(op);
  for (Op* op : completed_) delete op;
  for (Op* op : in_flight_) delete op;
  completed_.clear();
  in_flight_.clear();
  incoming_.clear();
  {
    std::lock_guard<std::mutex> lock(mu_);
    outbox_.clear();
    hello_.clear();
    replies_.clear();
    done_.clear();
    grads_.clear();
  }
  pool_.reset();
  ucx_.reset();
  if (wake_fd_ >= 0) ::close(wake_fd_);
  wake_fd_ = -1;
}

// ---------------------------------------------------------------------------------------------
// Caller side

void SparseExchange::Impl::check_table(int t) const {
  if (t < 0 || t >= num_tables())
    throw Error(str("SparseExchange: table ", t, " does not exist (", num_tables(), " tables)"));
}

int SparseExchange::Impl::owner(int t, int64_t id) const {
  check_table(t);
  const SparseTable& table = tables_[t];
  if (id < 0 || id >= table.rows)
    throw Error(str("SparseExchange::owner: id ", id, " of table ", t, " '", table.name,
                    "' is out of range [0, ", table.rows, ")"));
  return tail_owner(table.rows, table.hot_rows, topo_.world_size, id);
}

void SparseExchange::Impl::check_usable(const char* call) const {
  if (closed_)
    throw Error(str("SparseExchange::", call, " (", label_, ") after close()"));
}

void SparseExchange::Impl::check_ids(const char* call, int64_t step, int t,
                                     std::span<const int32_t> ids) const {
  const std::string problem = check_id_run(ids, 0, tables_[t].rows);
  if (!problem.empty())
    throw Error(str("SparseExchange::", call, "(step ", step, ", ", label_, "): table ", t, " '",
                    tables_[t].name, "': ", problem,
                    "; pass each table's ids sorted ascending without duplicates, in [0, rows)"));
}

// Per table, the part of `ids` (and of their rows) that `rank` owns: a contiguous run, since
// ids are ascending and ownership ranges are contiguous.
std::vector<RowsSource> SparseExchange::Impl::owned_slices(
    const std::vector<std::span<const int32_t>>& ids, const std::vector<const float*>& rows,
    int rank) const {
  std::vector<RowsSource> slices(tables_.size());
  for (size_t t = 0; t < tables_.size(); ++t) {
    const RowRange range = ranges_[t][rank];
    const auto begin = std::lower_bound(ids[t].begin(), ids[t].end(), range.begin);
    const auto end = std::lower_bound(begin, ids[t].end(), range.end);
    const size_t offset = static_cast<size_t>(begin - ids[t].begin());
    slices[t].ids = ids[t].subspan(offset, static_cast<size_t>(end - begin));
    slices[t].rows = rows[t] == nullptr ? nullptr : rows[t] + offset * tables_[t].dim;
  }
  return slices;
}

BufferRef SparseExchange::Impl::encode_rows(const std::vector<RowsSource>& sources,
                                            bool with_values) {
  BufferRef buffer = pool_->acquire(rows_payload_bytes(tables_, sources, with_values));
  write_rows(*buffer, tables_, sources, with_values);
  return buffer;
}

void SparseExchange::Impl::enqueue(std::vector<Outgoing> messages) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& message : messages) outbox_.push_back(std::move(message));
  }
  wake();
}

void SparseExchange::Impl::throw_if_failed(const char* call, int64_t step) const {
  const std::string where = str(" [", call, ", step ", step, "]");
  if (first_lost_ >= 0) throw PeerLost(first_lost_, lost_message_ + where);
  if (!fatal_.empty()) throw CommError(fatal_ + where);
}

template <typename Ready, typename Missing>
void SparseExchange::Impl::wait_until(std::unique_lock<std::mutex>& lock, const char* call,
                                      int64_t step, Ready ready, Missing missing) {
  const auto deadline =
      Clock::now() + std::chrono::duration_cast<Clock::duration>(
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

std::vector<int> SparseExchange::Impl::missing_in(const Staged& staged, int64_t step) const {
  std::vector<int> missing;
  const auto it = staged.find(step);
  for (int r = 0; r < topo_.world_size; ++r) {
    if (r == topo_.rank) continue;
    if (it == staged.end() || !it->second[r]) missing.push_back(r);
  }
  return missing;
}

void SparseExchange::Impl::request_rows(int64_t step,
                                        const std::vector<std::vector<int32_t>>& ids_per_table) {
  check_usable("request_rows");
  if (requested_ && step != *requested_ + 1)
    throw Error(str("SparseExchange::request_rows(step ", step, ", ", label_, "): the previous "
                    "request was for step ", *requested_, "; steps must be consecutive"));
  if (requested_ && waited_ != requested_)
    throw Error(str("SparseExchange::request_rows(step ", step, ", ", label_,
                    "): call wait_rows(", *requested_, ") first (one step of prefetch at most)"));
  if (ids_per_table.size() != tables_.size())
    throw Error(str("SparseExchange::request_rows(step ", step, ", ", label_, "): got ",
                    ids_per_table.size(), " id lists for ", tables_.size(), " tables"));
  std::vector<std::span<const int32_t>> ids(tables_.size());
  for (int t = 0; t < num_tables(); ++t) {
    ids[t] = ids_per_table[t];
    check_ids("request_rows", step, t, ids[t]);
  }
  const int world = topo_.world_size;
  if (world > 1) {
    std::unique_lock<std::mutex> lock(mu_);
    throw_if_failed("request_rows", step);
    lock.unlock();
    std::vector<IdLists> per_peer(world);
    std::vector<Outgoing> messages;
    const std::vector<const float*> no_rows(tables_.size(), nullptr);
    for (int peer = 0; peer < world; ++peer) {
      if (peer == topo_.rank) continue;
      const std::vector<RowsSource> slices = owned_slices(ids, no_rows, peer);
      per_peer[peer].resize(tables_.size());
      for (int t = 0; t < num_tables(); ++t)
        per_peer[peer][t].assign(slices[t].ids.begin(), slices[t].ids.end());
      BufferRef payload = encode_rows(slices, false);
      stats_.bytes_requested += static_cast<int64_t>(payload->size);
      messages.push_back({peer, MsgKind::kFetchRequest, step, std::move(payload)});
    }
    requested_ids_[step] = std::move(per_peer);
    enqueue(std::move(messages));
  }
  requested_ = step;
}

void SparseExchange::Impl::wait_rows(int64_t step) {
  check_usable("wait_rows");
  if (requested_ != step)
    throw Error(str("SparseExchange::wait_rows(step ", step, ", ", label_,
                    "): no request_rows for this step", requested_ ? " (last request: step " : "",
                    requested_ ? std::to_string(*requested_) + ")" : std::string()));
  if (waited_ && *waited_ == step)
    throw Error(str("SparseExchange::wait_rows(step ", step, ", ", label_, ") called twice"));
  if (waited_ && updated_ != waited_)
    throw Error(str("SparseExchange::wait_rows(step ", step, ", ", label_, "): finish step ",
                    *waited_, " first (exchange_gradients, rows_updated)"));
  const bool need_completions = waited_.has_value();  // not at this rank's first step
  const int world = topo_.world_size;
  if (world > 1) {
    const auto start = Clock::now();
    std::vector<BufferRef> replies, completions;
    {
      std::unique_lock<std::mutex> lock(mu_);
      wait_until(
          lock, "wait_rows", step,
          [&] {
            return missing_in(replies_, step).empty() &&
                   (!need_completions || missing_in(done_, step - 1).empty());
          },
          [&] {
            std::string text;
            const std::vector<int> replies_missing = missing_in(replies_, step);
            if (!replies_missing.empty())
              text = str("fetch replies from ", rank_list(replies_missing));
            if (need_completions) {
              const std::vector<int> done_missing = missing_in(done_, step - 1);
              if (!done_missing.empty())
                text += str(text.empty() ? "" : " and ", "step-", step - 1,
                            " completions from ", rank_list(done_missing));
            }
            return text;
          });
      replies = std::move(replies_[step]);
      replies_.erase(step);
      if (need_completions) {
        completions = std::move(done_[step - 1]);
        done_.erase(step - 1);
      }
    }
    stats_.wait_rows_s += seconds_since(start);

    const auto apply_start = Clock::now();
    const std::vector<IdLists>& asked = requested_ids_.at(step);
    for (int peer = 0; peer < world; ++peer) {
      if (peer == topo_.rank) continue;
      RowsView view;
      std::string problem = parse_rows(replies[peer].get(), tables_, true, &view);
      for (int t = 0; t < num_tables() && problem.empty(); ++t)
        if (!std::equal(view.ids[t].begin(), view.ids[t].end(), asked[peer][t].begin(),
                        asked[peer][t].end()))
          problem = str("table ", t, " ids differ from the ids asked for");
      if (!problem.empty())
        throw CommError(str("SparseExchange (", label_, "): bad fetch reply from rank ", peer,
                            " for step ", step, ": ", problem));
      for (int t = 0; t < num_tables(); ++t) {
        const int64_t dim = tables_[t].dim;
        for (size_t i = 0; i < view.ids[t].size(); ++i)
          std::memcpy(tables_[t].values + view.ids[t][i] * dim, view.values[t] + i * dim,
                      dim * sizeof(float));
      }
      stats_.rows_fetched += view.rows;
      stats_.bytes_fetched += static_cast<int64_t>(replies[peer]->size);
    }
    for (int peer = 0; peer < world && need_completions; ++peer) {
      if (peer == topo_.rank) continue;
      RowsView view;
      std::string problem = parse_rows(completions[peer].get(), tables_, true, &view);
      for (int t = 0; t < num_tables() && problem.empty(); ++t) {
        problem = check_id_run(view.ids[t], ranges_[t][peer].begin, ranges_[t][peer].end);
        for (const int32_t id : view.ids[t])
          if (problem.empty() &&
              !std::binary_search(asked[peer][t].begin(), asked[peer][t].end(), id))
            problem = str("table ", t, " id ", id, " was not asked for");
      }
      if (!problem.empty())
        throw CommError(str("SparseExchange (", label_, "): bad step-", step - 1,
                            " completion from rank ", peer, ": ", problem));
      for (int t = 0; t < num_tables(); ++t) {
        const int64_t dim = tables_[t].dim;
        for (size_t i = 0; i < view.ids[t].size(); ++i)
          std::memcpy(tables_[t].values + view.ids[t][i] * dim, view.values[t] + i * dim,
                      dim * sizeof(float));
      }
      stats_.rows_refreshed += view.rows;
      stats_.bytes_refreshed += static_cast<int64_t>(completions[peer]->size);
    }
    requested_ids_.erase(step);
    stats_.apply_rows_s += seconds_since(apply_start);
  }
  waited_ = step;
}

std::vector<SummedRows> SparseExchange::Impl::exchange_gradients(
    int64_t step,
    const std::vector<std::pair<const std::vector<int32_t>*, const float*>>& grads_per_table) {
  check_usable("exchange_gradients");
  if (waited_ != step)
    throw Error(str("SparseExchange::exchange_gradients(step ", step, ", ", label_,
                    "): call wait_rows(", step, ") first"));
  if (exchanged_ && *exchanged_ == step)
    throw Error(str("SparseExchange::exchange_gradients(step ", step, ", ", label_,
                    ") called twice"));
  if (grads_per_table.size() != tables_.size())
    throw Error(str("SparseExchange::exchange_gradients(step ", step, ", ", label_, "): got ",
                    grads_per_table.size(), " gradient tables for ", tables_.size(), " tables"));
  std::vector<std::span<const int32_t>> ids(tables_.size());
  std::vector<const float*> rows(tables_.size());
  for (int t = 0; t < num_tables(); ++t) {
    const auto& [table_ids, table_rows] = grads_per_table[t];
    if (table_ids == nullptr || (table_rows == nullptr && !table_ids->empty()))
      throw Error(str("SparseExchange::exchange_gradients(step ", step, ", ", label_,
                      "): table ", t, " '", tables_[t].name, "' has a null id list or rows"));
    ids[t] = *table_ids;
    rows[t] = table_rows;
    check_ids("exchange_gradients", step, t, ids[t]);
  }
  const int world = topo_.world_size;
  std::vector<BufferRef> contributions(world);
  if (world > 1) {
    std::vector<Outgoing> messages;
    for (int peer = 0; peer < world; ++peer) {
      if (peer == topo_.rank) continue;
      const std::vector<RowsSource> slices = owned_slices(ids, rows, peer);
      BufferRef payload = encode_rows(slices, true);
      for (const auto& slice : slices) stats_.rows_pushed += static_cast<int64_t>(slice.ids.size());
      stats_.bytes_pushed += static_cast<int64_t>(payload->size);
      messages.push_back({peer, MsgKind::kGradients, step, std::move(payload)});
    }
    enqueue(std::move(messages));
    const auto start = Clock::now();
    std::unique_lock<std::mutex> lock(mu_);
    wait_until(
        lock, "exchange_gradients", step, [&] { return missing_in(grads_, step).empty(); },
        [&] { return str("gradients from ", rank_list(missing_in(grads_, step))); });
    update_step_ = step;  // from here on the comm thread defers fetch requests
    wait_until(
        lock, "exchange_gradients", step, [&] { return readers_ == 0; },
        [] { return std::string("this rank's comm thread to finish answering a fetch"); });
    contributions = std::move(grads_[step]);
    grads_.erase(step);
    lock.unlock();
    stats_.exchange_wait_s += seconds_since(start);
  }

  const auto sum_start = Clock::now();
  const std::vector<RowsSource> own = owned_slices(ids, rows, topo_.rank);
  std::vector<RowsView> views(world);
  for (int peer = 0; peer < world; ++peer) {
    if (peer == topo_.rank) continue;
    std::string problem = parse_rows(contributions[peer].get(), tables_, true, &views[peer]);
    for (int t = 0; t < num_tables() && problem.empty(); ++t)
      problem = check_id_run(views[peer].ids[t], owned_[t].begin, owned_[t].end);
    if (!problem.empty())
      throw CommError(str("SparseExchange (", label_, "): bad gradients from rank ", peer,
                          " for step ", step, ": ", problem));
    stats_.rows_received += views[peer].rows;
    stats_.bytes_received += static_cast<int64_t>(contributions[peer]->size);
  }
  std::vector<SummedRows> sums(tables_.size());
  for (int t = 0; t < num_tables(); ++t) {
    const int64_t dim = tables_[t].dim;
    std::vector<RowsSource> sources(world);  // rank order
    for (int r = 0; r < world; ++r)
      sources[r] = r == topo_.rank ? own[t] : RowsSource{views[r].ids[t], views[r].values[t]};
    std::vector<int32_t>& union_ids = sums[t].ids;
    for (const auto& source : sources)
      union_ids.insert(union_ids.end(), source.ids.begin(), source.ids.end());
    std::sort(union_ids.begin(), union_ids.end());
    union_ids.erase(std::unique(union_ids.begin(), union_ids.end()), union_ids.end());
    std::vector<float>& out = sums[t].values;
    out.assign(union_ids.size() * dim, 0.0f);
    std::vector<char> seen(union_ids.size(), 0);
    for (const auto& source : sources) {
      size_t j = 0;
      for (size_t i = 0; i < source.ids.size(); ++i) {
        while (union_ids[j] < source.ids[i]) ++j;
        float* dst = out.data() + j * dim;
        const float* src = source.rows + i * dim;
        if (!seen[j]) {
          std::memcpy(dst, src, dim * sizeof(float));
          seen[j] = 1;
        } else {
          for (int64_t d = 0; d < dim; ++d) dst[d] += src[d];
        }
      }
    }
    updated_ids_[t] = union_ids;
  }
  stats_.exchange_sum_s += seconds_since(sum_start);
  exchanged_ = step;
  return sums;
}

void SparseExchange::Impl::rows_updated(int64_t step) {
  check_usable("rows_updated");
  if (exchanged_ != step)
    throw Error(str("SparseExchange::rows_updated(step ", step, ", ", label_,
                    "): call exchange_gradients(", step, ") first"));
  if (updated_ && *updated_ == step)
    throw Error(str("SparseExchange::rows_updated(step ", step, ", ", label_, ") called twice"));
  const int world = topo_.world_size;
  if (world > 1) {
    const auto start = Clock::now();
    // Rows asked for step+1 before this update and changed by it: refreshed in the completion.
    std::vector<IdLists> refresh(world, IdLists(tables_.size()));
    {
      std::lock_guard<std::mutex> lock(mu_);
      throw_if_failed("rows_updated", step);
      for (const FetchRequest& request : remembered_) {
        if (request.step != step + 1) continue;
        for (int t = 0; t < num_tables(); ++t)
          std::set_intersection(request.ids[t].begin(), request.ids[t].end(),
                                updated_ids_[t].begin(), updated_ids_[t].end(),
                                std::back_inserter(refresh[request.peer][t]));
      }
      std::erase_if(remembered_, [&](const FetchRequest& r) { return r.step <= step + 1; });
    }
    std::vector<Outgoing> messages;
    int64_t served_rows = 0, served_bytes = 0;
    for (int peer = 0; peer < world; ++peer) {
      if (peer == topo_.rank) continue;
      std::vector<RowsSource> sources(tables_.size());
      for (int t = 0; t < num_tables(); ++t) {
        sources[t].ids = refresh[peer][t];
        served_rows += static_cast<int64_t>(refresh[peer][t].size());
      }
      BufferRef payload = encode_rows(sources, true);
      served_bytes += static_cast<int64_t>(payload->size);
      messages.push_back({peer, MsgKind::kStepDone, step, std::move(payload)});
    }
    // Answer the requests deferred during the update window, until none is left; then close
    // the window in the same critical section.
    while (true) {
      std::vector<FetchRequest> deferred;
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (deferred_.empty()) {
          update_step_.reset();
          last_updated_ = step;
          for (auto& message : messages) outbox_.push_back(std::move(message));
          break;
        }
        deferred.swap(deferred_);
      }
      for (const FetchRequest& request : deferred) {
        std::vector<RowsSource> sources(tables_.size());
        for (int t = 0; t < num_tables(); ++t) {
          sources[t].ids = request.ids[t];
          served_rows += static_cast<int64_t>(request.ids[t].size());
        }
        BufferRef payload = encode_rows(sources, true);
        served_bytes += static_cast<int64_t>(payload->size);
        messages.push_back({request.peer, MsgKind::kFetchReply, request.step, std::move(payload)});
      }
    }
    wake();
    stats_.rows_served += served_rows;
    stats_.bytes_served += served_bytes;
    stats_.rows_updated_s += seconds_since(start);
  }
  updated_ = step;
  ++stats_.steps;
}

void SparseExchange::Impl::close() {
  if (closed_) return;
  closed_ = true;
  if (topo_.world_size == 1) return;
  std::exception_ptr error;
  try {
    std::vector<Outgoing> goodbyes;
    for (int peer = 0; peer < topo_.world_size; ++peer)
      if (peer != topo_.rank) goodbyes.push_back({peer, MsgKind::kGoodbye, 0, nullptr});
    enqueue(std::move(goodbyes));
    const int64_t step = updated_.value_or(0);
    std::unique_lock<std::mutex> lock(mu_);
    auto missing = [&] {
      std::vector<int> ranks;
      for (int r = 0; r < topo_.world_size; ++r)
        if (r != topo_.rank && !bye_[r]) ranks.push_back(r);
      return ranks;
    };
    wait_until(
        lock, "close", step, [&] { return missing().empty(); },
        [&] { return str("goodbyes from ", rank_list(missing())); });
  } catch (...) {
    error = std::current_exception();
  }
  shutdown(error == nullptr);
  if (error) std::rethrow_exception(error);
}

const SparseExchangeStats& SparseExchange::Impl::stats() const {
  merged_stats_ = stats_;
  merged_stats_.rows_served += served_rows_.load();
  merged_stats_.bytes_served += served_bytes_.load();
  merged_stats_.requests_deferred = deferred_count_.load();
  return merged_stats_;
}

// ---------------------------------------------------------------------------------------------
// Comm thread

void SparseExchange::Impl::wake() {
  if (wake_fd_ < 0) return;
  const uint64_t one = 1;
  [[maybe_unused]] const ssize_t written = ::write(wake_fd_, &one, sizeof one);
}

void SparseExchange::Impl::comm_main() {
  try {
    ucx_ = std::make_unique<UcxWorker>(topo_.local_size == topo_.world_size, label_);
    pool_ = std::make_unique<StagingPool>(ucx_->context());
    ucp_am_handler_param_t handler{};
    handler.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_FLAGS |
                         UCP_AM_HANDLER_PARAM_FIELD_CB | UCP_AM_HANDLER_PARAM_FIELD_ARG;
    handler.id = kAmId;
    handler.flags = UCP_AM_FLAG_WHOLE_MSG;
    handler.cb = &Impl::on_am;
    handler.arg = this;
    ELMO_UCX_CHECK(ucp_worker_set_am_recv_handler(ucx_->worker(), &handler), label_);
    std::lock_guard<std::mutex> lock(mu_);
    address_ = ucx_->address();
    init_ = Init::kReady;
  } catch (const std::exception& e) {
    std::lock_guard<std::mutex> lock(mu_);
    fatal_ = str("SparseExchange (", label_, "): UCX setup failed: ", e.what());
    init_ = Init::kFailed;
  }
  cv_.notify_all();
  if (init_ == Init::kFailed) return;

  bool graceful = false;
  try {
    run_loop();
    std::lock_guard<std::mutex> lock(mu_);
    graceful = graceful_;
  } catch (const std::exception& e) {
    std::lock_guard<std::mutex> lock(mu_);
    if (fatal_.empty()) fatal_ = str("SparseExchange (", label_, "): comm thread failed: ", e.what());
  }
  cv_.notify_all();
  try {
    close_endpoints(graceful);
  } catch (const std::exception& e) {
    log_warn("SparseExchange ", label_, ": closing UCX endpoints: ", e.what());
  }
}

void SparseExchange::Impl::run_loop() {
  ucp_worker_h worker = ucx_->worker();
  auto last_work = Clock::now();
  while (true) {
    bool worked = false;
    while (ucp_worker_progress(worker) != 0) worked = true;
    worked |= handle_incoming();
    worked |= handle_completions();
    worked |= handle_ep_errors();
    std::deque<Outgoing> sends;
    std::vector<std::string> connect;
    bool stop = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      sends.swap(outbox_);
      connect.swap(connect_to_);
      stop = stop_;
    }
    if (!connect.empty()) connect_peers(connect);
    for (Outgoing& message : sends)
      send(message.peer, message.kind, message.step, std::move(message.payload));
    if (stop) return;
    if (worked || !sends.empty() || !connect.empty()) {
      last_work = Clock::now();
      continue;
    }
    if (seconds_since(last_work) < kSpinSeconds) continue;
    const ucs_status_t armed = ucp_worker_arm(worker);
    if (armed == UCS_ERR_BUSY) continue;
    ELMO_UCX_CHECK(armed, label_);
    pollfd fds[2] = {{ucx_->event_fd(), POLLIN, 0}, {wake_fd_, POLLIN, 0}};
    // With operations in flight, wake up often even without events (a transport may need a
    // progress call that no fd announces); otherwise sleep until something happens.
    const int poll_ms = in_flight_.empty() && closing_.empty() ? 100 : 1;
    if (::poll(fds, 2, poll_ms) < 0 && errno != EINTR)
      throw CommError(str(label_, ": poll on the UCX event fd failed: ", std::strerror(errno)));
    if (fds[1].revents & POLLIN) {
      uint64_t count = 0;
      [[maybe_unused]] ssize_t n = ::read(wake_fd_, &count, sizeof count);
    }
    last_work = Clock::now() - std::chrono::seconds(1);  // sleep again right away if idle
  }
}

void SparseExchange::Impl::connect_peers(const std::vector<std::string>& addresses) {
  const std::string descriptor = descriptor_;
  for (int peer = 0; peer < topo_.world_size; ++peer) {
    if (peer == topo_.rank) continue;
    ucp_ep_params_t params{};
    params.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                        UCP_EP_PARAM_FIELD_ERR_HANDLER;
    params.address = reinterpret_cast<const ucp_address_t*>(addresses[peer].data());
    params.err_mode = UCP_ERR_HANDLING_MODE_PEER;
    params.err_handler.cb = &Impl::on_ep_error;
    params.err_handler.arg = &slots_[peer];
    const ucs_status_t status = ucp_ep_create(ucx_->worker(), &params, &eps_[peer]);
    if (status != UCS_OK) {
      eps_[peer] = nullptr;
      peer_failed(peer, status, " (creating the endpoint from its published address)");
      continue;
    }
    BufferRef hello = pool_->acquire(descriptor.size());
    std::memcpy(hello->data, descriptor.data(), descriptor.size());
    send(peer, MsgKind::kHello, 0, std::move(hello));
  }
}

void SparseExchange::Impl::send(int peer, MsgKind kind, int64_t step, BufferRef payload) {
  if (eps_[peer] == nullptr) return;  // lost or closed: the loss is reported elsewhere
  auto* op = new Op;
  op->self = this;
  op->is_send = true;
  op->peer = peer;
  op->header.kind = static_cast<uint32_t>(kind);
  op->header.step = step;
  op->header.src = topo_.rank;
  op->header.num_tables = num_tables();
  op->header.payload_bytes = payload ? payload->size : 0;
  op->payload = std::move(payload);
  ucp_request_param_t params{};
  params.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
  params.cb.send = &Impl::on_send_done;
  params.user_data = op;
  const void* data = nullptr;
  size_t bytes = 0;
  if (op->payload) {
    data = op->payload->data;
    bytes = op->payload->size;
    if (ucp_mem_h memh = pool_->registration(*op->payload, label_)) {
      params.op_attr_mask |= UCP_OP_ATTR_FIELD_MEMH;
      params.memh = memh;
    }
  }
  const ucs_status_ptr_t request =
      ucp_am_send_nbx(eps_[peer], kAmId, &op->header, sizeof(MsgHeader), data, bytes, &params);
  if (request == nullptr) {
    delete op;
  } else if (UCS_PTR_IS_ERR(request)) {
    const ucs_status_t status = UCS_PTR_STATUS(request);
    delete op;
    peer_failed(peer, status, str(" (sending a ", kind_name(static_cast<uint32_t>(kind)), ")"));
  } else {
    op->request = request;
    in_flight_.insert(op);
  }
}

ucs_status_t SparseExchange::Impl::on_am(void* arg, const void* header, size_t header_length,
                                         void* data, size_t length,
                                         const ucp_am_recv_param_t* param) {
  auto* self = static_cast<Impl*>(arg);
  Incoming in;
  if (header_length != sizeof(MsgHeader)) {
    in.header_error = str("active-message header of ", header_length, " bytes (expected ",
                          sizeof(MsgHeader), ")");
  } else {
    std::memcpy(&in.header, header, sizeof(MsgHeader));
    if (in.header.magic != kMagic) in.header_error = "wrong magic number";
    else if (in.header.src < 0 || in.header.src >= self->topo_.world_size ||
             in.header.src == self->topo_.rank)
      in.header_error = str("sender rank ", in.header.src, " is not a peer");
    else if (in.header.kind < 1 || in.header.kind > kLastKind)
      in.header_error = str("unknown message kind ", in.header.kind);
    else if (in.header.payload_bytes != length)
      in.header_error = str(kind_name(in.header.kind), " of ", length, " bytes, header says ",
                            in.header.payload_bytes);
  }
  const bool rndv = (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0;
  if (!in.header_error.empty()) {
    self->incoming_.push_back(std::move(in));
    return UCS_OK;  // drops rendezvous data too
  }
  if (rndv) {
    in.rndv_desc = data;
    in.length = length;
    self->incoming_.push_back(std::move(in));
    return UCS_INPROGRESS;  // received in handle_incoming (no UCX calls from this callback)
  }
  if (length > 0) {
    in.payload = self->pool_->acquire(length);
    std::memcpy(in.payload->data, data, length);
  }
  self->incoming_.push_back(std::move(in));
  return UCS_OK;
}

void SparseExchange::Impl::on_send_done(void* /*request*/, ucs_status_t status, void* user_data) {
  auto* op = static_cast<Op*>(user_data);
  op->status = status;
  op->self->completed_.push_back(op);
}

void SparseExchange::Impl::on_recv_done(void* /*request*/, ucs_status_t status, size_t /*length*/,
                                        void* user_data) {
  auto* op = static_cast<Op*>(user_data);
  op->status = status;
  op->self->completed_.push_back(op);
}

void SparseExchange::Impl::on_ep_error(void* arg, ucp_ep_h ep, ucs_status_t status) {
  auto* slot = static_cast<PeerSlot*>(arg);
  slot->self->ep_errors_.push_back({slot->rank, ep, status});
}

bool SparseExchange::Impl::handle_incoming() {
  if (incoming_.empty()) return false;
  std::vector<Incoming> batch;
  batch.swap(incoming_);
  for (Incoming& in : batch) {
    if (!in.header_error.empty()) {
      protocol_error(-1, "malformed message: " + in.header_error);
      continue;
    }
    if (in.rndv_desc == nullptr) {
      dispatch(in.header, std::move(in.payload));
      continue;
    }
    auto* op = new Op;
    op->self = this;
    op->is_send = false;
    op->peer = in.header.src;
    op->header = in.header;
    op->payload = pool_->acquire(in.length);
    ucp_request_param_t params{};
    params.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    params.cb.recv_am = &Impl::on_recv_done;
    params.user_data = op;
    if (ucp_mem_h memh = pool_->registration(*op->payload, label_)) {
      params.op_attr_mask |= UCP_OP_ATTR_FIELD_MEMH;
      params.memh = memh;
    }
    const ucs_status_ptr_t request =
        ucp_am_recv_data_nbx(ucx_->worker(), in.rndv_desc, op->payload->data, in.length, &params);
    if (request == nullptr) {
      dispatch(op->header, std::move(op->payload));
      delete op;
    } else if (UCS_PTR_IS_ERR(request)) {
      const ucs_status_t status = UCS_PTR_STATUS(request);
      const int peer = op->peer;
      const uint32_t kind = op->header.kind;
      delete op;
      peer_failed(peer, status, str(" (receiving a ", kind_name(kind), ")"));
    } else {
      op->request = request;
      in_flight_.insert(op);
    }
  }
  return true;
}

bool SparseExchange::Impl::handle_completions() {
  if (completed_.empty()) return false;
  std::vector<Op*> batch;
  batch.swap(completed_);
  for (Op* op : batch) {
    in_flight_.erase(op);
    if (op->request != nullptr) ucp_request_free(op->request);
    if (op->status != UCS_OK) {
      peer_failed(op->peer, op->status,
                  str(op->is_send ? " (sending a " : " (receiving a ", kind_name(op->header.kind),
                      ")"));
    } else if (!op->is_send) {
      dispatch(op->header, std::move(op->payload));
    }
    delete op;
  }
  return true;
}

bool SparseExchange::Impl::handle_ep_errors() {
  if (ep_errors_.empty()) return false;
  std::vector<EpError> batch;
  batch.swap(ep_errors_);
  for (const EpError& error : batch) peer_failed(error.peer, error.status, "");
  return true;
}

void SparseExchange::Impl::peer_failed(int peer, ucs_status_t status, const std::string& what) {
  if (eps_[peer] != nullptr) {
    // An endpoint that reported an error is unusable: release it without flushing.
    ucp_request_param_t params{};
    params.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    params.flags = UCP_EP_CLOSE_FLAG_FORCE;
    const ucs_status_ptr_t request = ucp_ep_close_nbx(eps_[peer], &params);
    if (UCS_PTR_IS_PTR(request)) closing_.push_back(request);
    eps_[peer] = nullptr;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (bye_[peer] || stop_ || lost_[peer]) return;  // gone after its goodbye: not a failure
    lost_[peer] = 1;
    if (first_lost_ < 0) {
      first_lost_ = peer;
      lost_message_ = str("SparseExchange (", label_, "): rank ", peer,
                          " was lost: UCX reported ", ucx_status_text(status),
                          " on its endpoint", what,
                          "; the process died, was killed or its host is unreachable (check "
                          "rank ", peer, "'s log)");
    }
  }
  cv_.notify_all();
}

void SparseExchange::Impl::protocol_error(int peer, const std::string& what) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (fatal_.empty())
      fatal_ = str("SparseExchange (", label_, "): protocol error",
                   peer >= 0 ? str(" with rank ", peer) : std::string(), ": ", what,
                   "; every rank must make the same calls for the same steps with the same "
                   "tables (and run the same elmo_fast build)");
  }
  cv_.notify_all();
}

void SparseExchange::Impl::dispatch(const MsgHeader& header, BufferRef payload) {
  const int peer = header.src;
  const auto kind = static_cast<MsgKind>(header.kind);
  if (header.num_tables != num_tables()) {
    protocol_error(peer, str(kind_name(header.kind), " for ", header.num_tables,
                             " tables (this rank has ", num_tables(), ")"));
    return;
  }
  if (kind == MsgKind::kFetchRequest) {
    answer_request(peer, header.step, std::move(payload));
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    Staged* staged = nullptr;
    switch (kind) {
      case MsgKind::kHello:
        if (!payload) payload = pool_->acquire(0);
        hello_[peer] = std::move(payload);
        break;
      case MsgKind::kGoodbye: bye_[peer] = 1; break;
      case MsgKind::kFetchReply: staged = &replies_; break;
      case MsgKind::kStepDone: staged = &done_; break;
      case MsgKind::kGradients: staged = &grads_; break;
      default: break;
    }
    if (staged != nullptr) {
      std::vector<BufferRef>& slots = (*staged)[header.step];
      if (slots.empty()) slots.resize(topo_.world_size);
      if (slots[peer]) {
        if (fatal_.empty())
          fatal_ = str("SparseExchange (", label_, "): protocol error with rank ", peer,
                       ": a second ", kind_name(header.kind), " for step ", header.step,
                       "; every rank must make the same calls for the same steps");
      } else {
        if (!payload) payload = pool_->acquire(0);  // parsed (and rejected) by the caller
        slots[peer] = std::move(payload);
      }
    }
  }
  cv_.notify_all();
}

void SparseExchange::Impl::answer_request(int peer, int64_t step, BufferRef payload) {
  RowsView view;
  std::string problem = parse_rows(payload.get(), tables_, false, &view);
  for (int t = 0; t < num_tables() && problem.empty(); ++t) {
    problem = check_id_run(view.ids[t], owned_[t].begin, owned_[t].end);
    if (!problem.empty()) problem = str("table ", t, ": ", problem, " (ids this rank owns)");
  }
  if (!problem.empty()) {
    protocol_error(peer, str("bad fetch request for step ", step, ": ", problem));
    return;
  }
  FetchRequest request{peer, step, IdLists(tables_.size())};
  for (int t = 0; t < num_tables(); ++t)
    request.ids[t].assign(view.ids[t].begin(), view.ids[t].end());
  payload.reset();
  std::string refusal;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (update_step_) {
      if (step == *update_step_ + 1) {
        deferred_.push_back(std::move(request));
        deferred_count_.fetch_add(1);
        return;
      }
      refusal = str("updates step ", *update_step_);
    } else if (last_updated_ && (step < *last_updated_ + 1 || step > *last_updated_ + 2)) {
      refusal = str("has completed step ", *last_updated_);
    } else {
      // Answered before this rank's next update: remember it, so that update refreshes it.
      if (!(last_updated_ && step == *last_updated_ + 1)) remembered_.push_back(request);
      ++readers_;
    }
  }
  if (!refusal.empty()) {
    protocol_error(peer, str("fetch request for step ", step, " while this rank ", refusal));
    return;
  }
  std::vector<RowsSource> sources(tables_.size());
  int64_t rows = 0;
  for (int t = 0; t < num_tables(); ++t) {
    sources[t].ids = request.ids[t];
    rows += static_cast<int64_t>(request.ids[t].size());
  }
  BufferRef reply;
  try {
    reply = encode_rows(sources, true);  // reads owned rows: no update window is open
  } catch (...) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      --readers_;
    }
    cv_.notify_all();
    throw;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    --readers_;
  }
  cv_.notify_all();
  served_rows_.fetch_add(rows);
  served_bytes_.fetch_add(static_cast<int64_t>(reply->size));
  send(peer, MsgKind::kFetchReply, step, std::move(reply));
}

void SparseExchange::Impl::close_endpoints(bool graceful) {
  ucp_worker_h worker = ucx_->worker();
  ucp_request_param_t params{};
  params.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
  params.flags = graceful ? 0 : UCP_EP_CLOSE_FLAG_FORCE;  // 0: flush what was sent, then close
  for (ucp_ep_h& ep : eps_) {
    if (ep == nullptr) continue;
    const ucs_status_ptr_t request = ucp_ep_close_nbx(ep, &params);
    if (UCS_PTR_IS_PTR(request)) closing_.push_back(request);
    ep = nullptr;
  }
  const auto start = Clock::now();
  const double limit = graceful ? std::min(options_.timeout_s, 10.0) : 2.0;
  while (!closing_.empty() && seconds_since(start) < limit) {
    ucp_worker_progress(worker);
    handle_completions();  // cancelled sends return their buffers
    std::erase_if(closing_, [](void* request) {
      if (ucp_request_check_status(request) == UCS_INPROGRESS) return false;
      ucp_request_free(request);
      return true;
    });
    if (!closing_.empty()) std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  if (!closing_.empty())
    log_warn("SparseExchange ", label_, ": ", closing_.size(),
             " UCX endpoints did not close within ", limit, " s; releasing them anyway");
  closing_.clear();
  ep_errors_.clear();
}

// ---------------------------------------------------------------------------------------------
// Public wrapper

SparseExchange::SparseExchange(KvStore& store, const Topology& topo,
                               std::vector<SparseTable> tables,
                               const SparseExchangeOptions& options)
    : impl_(std::make_unique<Impl>(store, topo, std::move(tables), options)) {}
SparseExchange::~SparseExchange() = default;
int SparseExchange::num_tables() const { return impl_->num_tables(); }
const SparseTable& SparseExchange::table(int t) const { return impl_->table(t); }
RowRange SparseExchange::owned_rows(int table) const { return impl_->owned_rows(table); }
int SparseExchange::owner(int table, int64_t id) const { return impl_->owner(table, id); }
void SparseExchange::request_rows(int64_t step,
                                  const std::vector<std::vector<int32_t>>& ids_per_table) {
  impl_->request_rows(step, ids_per_table);
}
void SparseExchange::wait_rows(int64_t step) { impl_->wait_rows(step); }
std::vector<SummedRows> SparseExchange::exchange_gradients(
    int64_t step,
    const std::vector<std::pair<const std::vector<int32_t>*, const float*>>& grads_per_table) {
  return impl_->exchange_gradients(step, grads_per_table);
}
void SparseExchange::rows_updated(int64_t step) { impl_->rows_updated(step); }
void SparseExchange::close() { impl_->close(); }
const SparseExchangeStats& SparseExchange::stats() const { return impl_->stats(); }

}  // namespace elmo
