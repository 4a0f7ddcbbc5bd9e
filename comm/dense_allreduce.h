// Dense all-reduce of replicated gradients: Gloo over TCP for CPU buffers, NCCL for device
// buffers. Both meet through the job's KvStore (comm/rendezvous.h).
//
// Contract of every backend: in place; every rank calls the same operations in the same order
// with the same counts; the result is bitwise identical on every rank (each element is reduced
// once and the result copied to all ranks). A dead or hung peer turns into a CommError within the
// timeout, never a hang. What it is not: overlap with backward (callers bucket and schedule), or
// any collective but sum and barrier.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "comm/kv_store.h"
#include "comm/topology.h"

namespace elmo {

class DenseAllreduce {
 public:
  virtual ~DenseAllreduce();
  // data[0..count) summed over the ranks, in place.
  virtual void sum(float* data, int64_t count) = 0;
  virtual void sum(double* data, int64_t count) = 0;
  // bf16 values as raw 16-bit words; NCCL only (the Gloo backend throws CommError).
  virtual void sum_bf16(uint16_t* data, int64_t count);
  virtual void barrier() = 0;
  virtual std::string backend() const = 0;  // "gloo" | "nccl"
};

// Gloo over TCP: listens on local_address (the address peers reach this rank on, e.g.
// local_address_towards(root host) or RankSession::local_address()), exchanges pair addresses
// under "gloo/<name>/" in the store, and connects to every rank. Every collective fails with
// CommError after timeout_s (a peer that died or hangs). `name` separates several instances in
// one job (created in the same order on every rank). Blocks until every rank has connected.
std::unique_ptr<DenseAllreduce> make_gloo_allreduce(KvStore& store, const Topology& topology,
                                                    const std::string& local_address,
                                                    double timeout_s,
                                                    const std::string& name = "dense");

// NCCL on CUDA device `device`: data pointers are device pointers on it; collectives are
// ordered on the calling thread's current stream (runtime/stream.h) and sum() returns once the
// result is in place. Rank 0 publishes the unique id under "nccl/<name>/id". A watchdog aborts
// the communicator when NCCL reports an asynchronous error or a collective is in flight longer
// than timeout_s; the waiting call then throws CommError. Throws CommError when NCCL cannot be
// initialised (no GPU, two ranks on one device, a peer missing) within timeout_s.
std::unique_ptr<DenseAllreduce> make_nccl_allreduce(KvStore& store, const Topology& topology,
                                                    int device, double timeout_s,
                                                    const std::string& name = "dense");

}  // namespace elmo
