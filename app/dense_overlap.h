// DenseOverlap: all-reduces the LSTM gradients layer by layer while the backward pass is still
// computing the layers below. A distributed rank's dense gradients are final one layer at a
// time (the backward runs from the top layer down, both directions at once); each group (one
// layer of one direction) is copied into its segment of the rank's gradient bucket and summed
// over the ranks by a worker thread as soon as it is final, so only the last group's reduction
// is left when the backward ends.
//
// Order. Collectives must be issued in the same order on every rank, but the directions finish
// their layers in any order (CPU: one thread each). The worker therefore reduces the groups in
// the fixed order given to the constructor, waiting for each to be ready; a group that is ready
// early waits for its turn.
//
// Devices. CPU buckets (Gloo): ready() is called once the group's gradients are computed; the
// worker copies and sums them on the host. CUDA buckets (NCCL): ready() is called on the host
// thread that queued the group's backward kernels, with the direction's stream current; it
// records an event there, and the worker makes its own stream wait for that event before the
// copy and the all-reduce, so no host thread ever blocks on the backward. The worker's stream
// is non-blocking (runtime/stream.h): finish_step() makes the calling thread's current stream
// wait for an event recorded behind the step's last reduction (the bf16 widening into the
// bucket is still queued when the worker reports the step done), so whatever that thread
// issues next reads the summed bucket.
//
// Per step: begin_step() (before the backward), ready(g) for every group (any thread, any
// order), then finish_step() blocks until every group is reduced and rethrows the worker's
// error (a CommError from the all-reduce). A step abandoned before finish_step (the backward
// threw) is cancelled by the destructor, which never blocks on a group that will not come.
// What it is not: the bucket's owner (DataParallel lays it out) or the reduction of the hot
// table rows, which are only known after the backward.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "comm/dense_allreduce.h"
#include "model/parameters.h"
#include "runtime/dtype.h"

namespace elmo {

class CudaEvent;
class CudaStream;

class DenseOverlap {
 public:
  struct Group {
    std::vector<Parameter*> params;  // contiguous in the bucket, in this order, from `offset`
    int64_t offset = 0;              // floats into the bucket
  };
  // groups: in the order every rank reduces them. bucket: host or device floats on `device`
  // covering every group. max_piece_floats: the longest single all-reduce (NCCL pieces); 0 for
  // no limit. bf16: each group is rounded to bf16, summed as bf16 (DenseAllreduce::sum_bf16,
  // NCCL only) and widened back into the bucket. Starts the worker thread.
  DenseOverlap(std::vector<Group> groups, float* bucket, DenseAllreduce& allreduce, Device device,
               int64_t max_piece_floats, bool bf16 = false);
  ~DenseOverlap();
  DenseOverlap(const DenseOverlap&) = delete;
  DenseOverlap& operator=(const DenseOverlap&) = delete;

  int num_groups() const { return static_cast<int>(groups_.size()); }
  void begin_step();
  void ready(int group);
  void finish_step();
  // Seconds the last finish_step blocked (the reduction not hidden behind the backward).
  double last_wait_s() const { return last_wait_s_; }

 private:
  void run();
  void reduce(int group);

  std::vector<Group> groups_;
  std::vector<int64_t> counts_;  // floats per group
  float* bucket_;
  DenseAllreduce& allreduce_;
  Device device_;
  int64_t max_piece_;
  bool bf16_;
  Tensor scratch_;  // bf16: [largest group] 16-bit words on `device`
  std::unique_ptr<CudaStream> stream_;             // CUDA: the worker's stream
  std::vector<std::unique_ptr<CudaEvent>> events_;  // CUDA: per group, recorded by ready()
  std::unique_ptr<CudaEvent> reduced_;  // CUDA: behind the step's last reduction (worker stream)

  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  bool armed_ = false;   // begin_step called, the worker is reducing this step's groups
  bool done_ = true;     // every group of the armed step reduced (or failed)
  std::vector<char> ready_;
  std::exception_ptr error_;
  double last_wait_s_ = 0.0;
  std::thread worker_;
};

}  // namespace elmo
