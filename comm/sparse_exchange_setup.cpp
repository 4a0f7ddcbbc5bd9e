// SparseExchange: row ownership (tail_shard, tail_owner), the Impl's construction (endpoints,
// the table descriptor every rank must agree on, the comm thread) and its teardown (close's
// goodbyes, shutdown). The caller-side step protocol is in sparse_exchange.cpp, the comm thread
// in sparse_exchange_comm.cpp; semantics in the header.
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <exception>
#include <sstream>

#include "comm/sparse_exchange.h"
#include "comm/sparse_exchange_impl.h"
#include "runtime/error.h"
#include "runtime/log.h"

namespace elmo {

using namespace sparse_wire;
using namespace sparse_detail;

TailShard tail_shard(int64_t rows, int64_t hot_rows, int rank, int world_size) {
  ELMO_CHECK(0 <= hot_rows && hot_rows <= rows, "hot_rows ", hot_rows, " outside [0, ", rows, "]");
  ELMO_CHECK(world_size > 0 && 0 <= rank && rank < world_size, "rank ", rank,
             " is not inside world size ", world_size);
  return {rows, hot_rows, rank, world_size};
}

int tail_owner(int64_t rows, int64_t hot_rows, int world_size, int64_t id) {
  ELMO_CHECK(world_size > 0 && 0 <= hot_rows && hot_rows <= rows, "bad table shape: rows ", rows,
             ", hot_rows ", hot_rows, ", world ", world_size);
  ELMO_CHECK(0 <= id && id < rows, "id ", id, " is out of range [0, ", rows, ")");
  if (id < hot_rows) return -1;
  return static_cast<int>((id - hot_rows) % world_size);
}

std::string sparse_detail::rank_list(const std::vector<int>& ranks) {
  std::ostringstream os;
  os << (ranks.size() == 1 ? "rank " : "ranks ");
  for (size_t i = 0; i < ranks.size(); ++i) os << (i > 0 ? ", " : "") << ranks[i];
  return os.str();
}

namespace {

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

}  // namespace

// ---------------------------------------------------------------------------------------------
// Construction and teardown

SparseExchange::Impl::Impl(KvStore& store, const Topology& topo, std::vector<SparseTable> tables,
                           const SparseExchangeOptions& options)
    : topo_(topo), tables_(std::move(tables)), options_(options) {
  label_ = str("rank ", topo_.rank, "/", topo_.world_size);
  if (topo_.world_size < 1 || topo_.rank < 0 || topo_.rank >= topo_.world_size)
    throw Error(
        str("SparseExchange: rank ", topo_.rank, " is not inside world size ", topo_.world_size));
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
    owned_.push_back(tail_shard(table.rows, table.hot_rows, topo_.rank, topo_.world_size));
    std::vector<TailShard> per_rank;
    for (int r = 0; r < topo_.world_size; ++r)
      per_rank.push_back(tail_shard(table.rows, table.hot_rows, r, topo_.world_size));
    shards_.push_back(std::move(per_rank));
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
    wait_until(
        lock, "construction (UCX setup)", 0, [&] { return init_ != Init::kStarting; },
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

}  // namespace elmo
