// The NCCL backend of DenseAllreduce, with a watchdog: NCCL has no timeouts of its own, so a
// thread polls the communicator's asynchronous error and the age of the collective in flight
// and aborts the communicator when either goes wrong; the waiting call then throws CommError.
// The communicator is non-blocking (ncclConfig_t::blocking = 0) so that initialisation, which
// waits for every peer, can be timed out too.
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>

#include "comm/dense_allreduce.h"
#include "comm/rendezvous.h"
#include "runtime/cuda_memory.h"
#include "runtime/log.h"
#include "runtime/stream.h"

namespace elmo {

namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void throw_nccl_failure(const char* expr, ncclResult_t result, ncclComm_t comm,
                                     const std::string& where, const char* file, int line) {
  const char* detail = comm != nullptr ? ncclGetLastError(comm) : ncclGetLastError(nullptr);
  throw CommError(str("NCCL call ", expr, " failed on ", where, ": ", ncclGetErrorString(result),
                      detail != nullptr && detail[0] != '\0' ? str(" (", detail, ")") : "", " at ",
                      file, ":", line));
}

// Checks an NCCL call; ncclInProgress (non-blocking communicator) is not a failure.
#define ELMO_NCCL_CHECK(expr, comm, where)                                      \
  do {                                                                          \
    const ncclResult_t elmo_nccl_ = (expr);                                     \
    if (elmo_nccl_ != ncclSuccess && elmo_nccl_ != ncclInProgress) [[unlikely]] \
      throw_nccl_failure(#expr, elmo_nccl_, comm, where, __FILE__, __LINE__);   \
  } while (0)

#define ELMO_CUDA_COMM_CHECK(expr, where)                                                    \
  do {                                                                                       \
    const cudaError_t elmo_cuda_ = (expr);                                                   \
    if (elmo_cuda_ != cudaSuccess) [[unlikely]]                                              \
      throw CommError(str("CUDA call ", #expr, " failed on ", where, ": ",                   \
                          cudaGetErrorString(elmo_cuda_), " at ", __FILE__, ":", __LINE__)); \
  } while (0)

class NcclAllreduce : public DenseAllreduce {
 public:
  NcclAllreduce(KvStore& store, const Topology& topology, int device, double timeout_s,
                const std::string& name)
      : topology_(topology), device_(device), timeout_s_(timeout_s) {
    where_ = str("rank ", topology.rank, " of ", topology.world_size, " (device ", device, ")");
    ELMO_REQUIRE(timeout_s > 0, "the NCCL timeout must be > 0 (got ", timeout_s, ")");
    const int devices = cuda_device_count();
    if (device < 0 || device >= devices)
      throw CommError(str("NCCL needs a CUDA device: ", where_, " asks for device ", device,
                          " but this machine has ", devices, " usable GPU(s)"));
    ELMO_CUDA_COMM_CHECK(cudaSetDevice(device_), where_);

    ncclUniqueId id;
    const std::string key = str("nccl/", name, "/id");
    if (topology.rank == 0) {
      ELMO_NCCL_CHECK(ncclGetUniqueId(&id), nullptr, where_);
      store.set(key, std::string(reinterpret_cast<const char*>(&id), sizeof id));
    } else {
      const std::string bytes = store.get(key, timeout_s);
      if (bytes.size() != sizeof id)
        throw CommError(str("the NCCL unique id under '", key, "' has ", bytes.size(),
                            " bytes, expected ", sizeof id));
      std::memcpy(&id, bytes.data(), sizeof id);
    }
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    ELMO_NCCL_CHECK(ncclCommInitRankConfig(&comm_, topology.world_size, id, topology.rank, &config),
                    comm_, where_);
    wait_ready("ncclCommInitRankConfig", Clock::now() + seconds(timeout_s_),
               "joining the NCCL communicator (a peer rank may be missing or on the same GPU)");
    ELMO_CUDA_COMM_CHECK(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming), where_);
    ELMO_CUDA_COMM_CHECK(cudaMalloc(&scratch_, sizeof(float)), where_);
    watchdog_ = std::thread([this] { watch(); });
  }

  ~NcclAllreduce() override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    if (watchdog_.joinable()) watchdog_.join();
    std::lock_guard<std::mutex> lock(nccl_mutex_);
    if (comm_ != nullptr) {  // not aborted
      // Flush and release; a peer that vanished must not hang the exit: abort after timeout.
      bool clean = false;
      const ncclResult_t finalized = ncclCommFinalize(comm_);
      if (finalized == ncclSuccess || finalized == ncclInProgress) {
        const auto deadline = Clock::now() + seconds(timeout_s_);
        ncclResult_t state = ncclInProgress;
        while (state == ncclInProgress && Clock::now() < deadline) {
          if (ncclCommGetAsyncError(comm_, &state) != ncclSuccess) break;
          if (state == ncclInProgress) std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        clean = state == ncclSuccess;
      }
      if (clean)
        ncclCommDestroy(comm_);
      else
        ncclCommAbort(comm_);
      comm_ = nullptr;
    }
    if (scratch_ != nullptr) cudaFree(scratch_);
    if (done_ != nullptr) cudaEventDestroy(done_);
  }

  void sum(float* data, int64_t count) override { run(data, count, ncclFloat32, "floats"); }
  void sum(double* data, int64_t count) override { run(data, count, ncclFloat64, "doubles"); }
  void sum_bf16(uint16_t* data, int64_t count) override {
    run(data, count, ncclBfloat16, "bf16 values");
  }
  void barrier() override { run(scratch_, 1, ncclFloat32, "floats (barrier)"); }
  std::string backend() const override { return "nccl"; }

 private:
  static Clock::duration seconds(double s) {
    return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
  }

  // Polls a non-blocking communicator until the last call completed, failed or the deadline.
  void wait_ready(const char* call, Clock::time_point deadline, const std::string& what) {
    for (;;) {
      ncclResult_t state = ncclSuccess;
      {
        std::lock_guard<std::mutex> lock(nccl_mutex_);
        if (comm_ == nullptr) throw CommError(str("NCCL on ", where_, " was aborted: ", failed_));
        ELMO_NCCL_CHECK(ncclCommGetAsyncError(comm_, &state), comm_, where_);
      }
      if (state == ncclSuccess) return;
      if (state != ncclInProgress) {
        abort_comm(str(call, " failed: ", ncclGetErrorString(state)));
        throw CommError(str("NCCL failed on ", where_, " while ", what, ": ", failed_));
      }
      if (Clock::now() >= deadline) {
        abort_comm(str(call, " did not complete within ", format_seconds(timeout_s_)));
        throw CommError(str("NCCL on ", where_, " timed out while ", what, ": ", failed_));
      }
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  }

  void run(void* data, int64_t count, ncclDataType_t type, const char* unit) {
    ELMO_CHECK(count >= 0, "all-reduce of ", count, " ", unit);
    if (aborted_)
      throw CommError(
          str("NCCL all-reduce on ", where_, " after an earlier failure (", failed_, ")"));
    if (count == 0) return;
    ELMO_CUDA_COMM_CHECK(cudaSetDevice(device_), where_);
    const std::string what = str("NCCL all-reduce of ", count, " ", unit);
    const cudaStream_t stream = current_stream();
    {
      std::lock_guard<std::mutex> lock(mutex_);
      in_flight_ = true;
      started_ = Clock::now();
      what_ = what;
    }
    struct Landed {  // clears the in-flight mark however we leave
      NcclAllreduce* self;
      ~Landed() {
        std::lock_guard<std::mutex> lock(self->mutex_);
        self->in_flight_ = false;
      }
    } landed{this};
    {
      std::lock_guard<std::mutex> lock(nccl_mutex_);
      if (comm_ == nullptr) throw CommError(str(what, " on ", where_, ": aborted: ", failed_));
      ELMO_NCCL_CHECK(
          ncclAllReduce(data, data, static_cast<size_t>(count), type, ncclSum, comm_, stream),
          comm_, where_);
    }
    wait_ready("ncclAllReduce", started_ + seconds(timeout_s_), what);
    ELMO_CUDA_COMM_CHECK(cudaEventRecord(done_, stream), where_);
    auto pause = std::chrono::microseconds(20);
    for (;;) {
      const cudaError_t state = cudaEventQuery(done_);
      if (state == cudaSuccess) break;
      if (state != cudaErrorNotReady)
        throw CommError(str(what, " failed on ", where_, ": ", cudaGetErrorString(state)));
      if (aborted_)
        throw CommError(str(what, " failed on ", where_, ": ", failed_,
                            "; the communicator was aborted (a peer rank died or hangs)"));
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::microseconds(1000));
    }
  }

  // Aborts the communicator once (any thread); failed_ is written before aborted_ is set and
  // never changes afterwards, so readers check aborted_ first.
  void abort_comm(const std::string& reason) {
    std::lock_guard<std::mutex> lock(nccl_mutex_);
    if (comm_ == nullptr) return;
    failed_ = reason;
    log_error("NCCL on ", where_, ": ", reason, "; aborting the communicator");
    ncclCommAbort(comm_);
    comm_ = nullptr;
    aborted_ = true;
  }

  void watch() {
    std::unique_lock<std::mutex> lock(mutex_);
    while (!stop_ && !aborted_) {
      wake_.wait_for(lock, std::chrono::milliseconds(50));
      if (stop_) break;
      const bool stuck = in_flight_ && Clock::now() - started_ > seconds(timeout_s_);
      const std::string what = what_;
      lock.unlock();
      std::string problem;
      {
        std::lock_guard<std::mutex> nccl_lock(nccl_mutex_);
        ncclResult_t state = ncclSuccess;
        const ncclResult_t polled =
            comm_ == nullptr ? ncclSuccess : ncclCommGetAsyncError(comm_, &state);
        if (polled != ncclSuccess)
          problem = str("ncclCommGetAsyncError failed: ", ncclGetErrorString(polled));
        else if (state != ncclSuccess && state != ncclInProgress)
          problem = str("NCCL reported an asynchronous error: ", ncclGetErrorString(state));
        else if (stuck)
          problem = str(what, " did not finish within ", format_seconds(timeout_s_));
      }
      if (!problem.empty()) abort_comm(problem);
      lock.lock();
    }
  }

  Topology topology_;
  int device_;
  double timeout_s_;
  std::string where_;
  ncclComm_t comm_ = nullptr;
  cudaEvent_t done_ = nullptr;
  void* scratch_ = nullptr;

  std::mutex mutex_;  // in-flight bookkeeping shared with the watchdog
  std::condition_variable wake_;
  bool stop_ = false;
  bool in_flight_ = false;
  Clock::time_point started_{};
  std::string what_;
  std::thread watchdog_;

  std::mutex nccl_mutex_;  // every NCCL call on comm_ (abort may come from the watchdog)
  std::atomic<bool> aborted_{false};
  std::string failed_;  // why the communicator is unusable (written before aborted_ is set)
};

}  // namespace

std::unique_ptr<DenseAllreduce> make_nccl_allreduce(KvStore& store, const Topology& topology,
                                                    int device, double timeout_s,
                                                    const std::string& name) {
  return std::make_unique<NcclAllreduce>(store, topology, device, timeout_s, name);
}

}  // namespace elmo
