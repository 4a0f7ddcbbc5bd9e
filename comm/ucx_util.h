// UCX helpers for comm/: the UCX check macro, one context + worker set up with the project's
// transport defaults, and a pool of host staging buffers registered with ucp_mem_map.
// What it is not: a wrapper around UCX's API. Whoever owns a UcxWorker makes every call on it
// from one thread at a time (comm/sparse_exchange.cpp: its comm thread).
#pragma once

#include <ucp/api/ucp.h>

#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "comm/kv_store.h"

namespace elmo {

// "Connection reset by remote peer (UCX status -25)".
std::string ucx_status_text(ucs_status_t status);
// Throws CommError naming the call, file, line, status and `where` (e.g. "rank 1/4").
[[noreturn]] void throw_ucx_failure(const char* expr, const char* file, int line,
                                    ucs_status_t status, const std::string& where);

}  // namespace elmo

#define ELMO_UCX_CHECK(expr, where)                                                    \
  do {                                                                                 \
    ucs_status_t elmo_ucx_status_ = (expr);                                            \
    if (elmo_ucx_status_ != UCS_OK) [[unlikely]]                                       \
      ::elmo::throw_ucx_failure(#expr, __FILE__, __LINE__, elmo_ucx_status_, (where)); \
  } while (0)

namespace elmo {

// One UCP context (features: active messages + wakeup) and one single-threaded worker.
// Transport settings come from the UCX_* environment. When `all_ranks_local` and UCX_TLS is
// unset, the transports default to tcp (peer error handling drops shared memory anyway), and
// UCX_NET_DEVICES to lo when that is unset too; `transports()` says what was chosen.
class UcxWorker {
 public:
  UcxWorker(bool all_ranks_local, const std::string& where);
  ~UcxWorker();
  UcxWorker(const UcxWorker&) = delete;
  UcxWorker& operator=(const UcxWorker&) = delete;

  ucp_context_h context() const { return context_; }
  ucp_worker_h worker() const { return worker_; }
  const std::string& address() const { return address_; }  // worker address blob
  int event_fd() const { return event_fd_; }               // readable when armed + events
  const std::string& transports() const { return transports_; }
  // Destroys the worker (and with it every endpoint and request) but keeps the context, so
  // registered memory can still be unmapped; the destructor then releases the context.
  void destroy_worker();

 private:
  ucp_context_h context_ = nullptr;
  ucp_worker_h worker_ = nullptr;
  std::string address_;
  std::string transports_;
  int event_fd_ = -1;
};

// A host buffer of fixed capacity (64-byte aligned). `size` is the used part. `memh` is set
// once the buffer has been registered (StagingPool::registration) and stays valid for the
// buffer's life: buffers never grow.
struct StagingBuffer {
  char* data = nullptr;
  size_t capacity = 0;
  size_t size = 0;
  ucp_mem_h memh = nullptr;
};

class StagingPool;
struct StagingReturn {
  StagingPool* pool = nullptr;
  void operator()(StagingBuffer* buffer) const;
};
using BufferRef = std::unique_ptr<StagingBuffer, StagingReturn>;

// Recycles staging buffers by capacity class (4 KiB and up, at most 25% above the request).
// acquire/release are thread-safe; registration() makes UCX calls and belongs to the thread that
// owns the worker. Destroy the pool before the context (it unmaps every registered buffer), after
// every BufferRef it handed out is gone.
class StagingPool {
 public:
  explicit StagingPool(ucp_context_h context) : context_(context) {}
  ~StagingPool();
  StagingPool(const StagingPool&) = delete;
  StagingPool& operator=(const StagingPool&) = delete;

  // A buffer with capacity >= bytes and size == bytes.
  BufferRef acquire(size_t bytes);
  // The memory handle of `buffer`, registering it on first use; nullptr for small buffers
  // (below kRegisterBytes, sent eagerly by copy, where registration buys nothing).
  ucp_mem_h registration(StagingBuffer& buffer, const std::string& where);

  static constexpr size_t kRegisterBytes = size_t{64} << 10;

 private:
  friend struct StagingReturn;
  void release(StagingBuffer* buffer);

  ucp_context_h context_;
  std::mutex mu_;
  std::vector<std::unique_ptr<StagingBuffer>> all_;     // every buffer ever made (owner)
  std::map<size_t, std::vector<StagingBuffer*>> free_;  // capacity -> idle buffers
};

}  // namespace elmo
