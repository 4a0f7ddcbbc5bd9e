#include "app/dense_overlap.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "kernels/pointwise.h"
#include "runtime/cuda_memory.h"
#include "runtime/error.h"
#include "runtime/stream.h"

namespace elmo {

DenseOverlap::DenseOverlap(std::vector<Group> groups, float* bucket, DenseAllreduce& allreduce,
                           Device device, int64_t max_piece_floats, bool bf16)
    : groups_(std::move(groups)),
      bucket_(bucket),
      allreduce_(allreduce),
      device_(device),
      max_piece_(max_piece_floats),
      bf16_(bf16) {
  for (const Group& g : groups_) {
    ELMO_CHECK(!g.params.empty() && g.offset >= 0, "DenseOverlap: an empty group");
    int64_t count = 0;
    for (const Parameter* p : g.params) {
      ELMO_CHECK(p->grad.device() == device_, "DenseOverlap: ", p->name, " is on ",
                 p->grad.device().str(), ", the bucket on ", device_.str());
      count += p->grad.numel();
    }
    counts_.push_back(count);
  }
  ready_.assign(groups_.size(), 0);
  if (bf16_ && !counts_.empty())
    scratch_ = Tensor::empty({*std::max_element(counts_.begin(), counts_.end())}, DType::kBF16,
                             device_);
  if (device_.is_cuda()) {
    cuda_set_device(device_.index);
    stream_ = std::make_unique<CudaStream>(device_.index);
    for (size_t g = 0; g < groups_.size(); ++g)
      events_.push_back(std::make_unique<CudaEvent>(device_.index));
    reduced_ = std::make_unique<CudaEvent>(device_.index);
    // The scratch was allocated on this thread's stream: the worker's stream waits for it.
    CudaEvent allocated(device_.index);
    allocated.record(current_stream());
    allocated.wait(stream_->get());
  }
  worker_ = std::thread([this] { run(); });
}

DenseOverlap::~DenseOverlap() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  worker_.join();
}

void DenseOverlap::begin_step() {
  std::lock_guard<std::mutex> lock(mu_);
  ELMO_CHECK(!armed_, "DenseOverlap::begin_step: the previous step was not finished");
  std::fill(ready_.begin(), ready_.end(), 0);
  error_ = nullptr;
  armed_ = true;
  done_ = false;
  cv_.notify_all();
}

void DenseOverlap::ready(int group) {
  ELMO_CHECK(group >= 0 && group < num_groups(), "DenseOverlap::ready: no group ", group);
  // CUDA: mark what the backward has queued so far on this thread's stream (the direction's).
  if (device_.is_cuda()) events_[group]->record(current_stream());
  std::lock_guard<std::mutex> lock(mu_);
  ELMO_CHECK(armed_, "DenseOverlap::ready(", group, ") outside a step (call begin_step first)");
  ELMO_CHECK(!ready_[group], "DenseOverlap::ready(", group, ") called twice in one step");
  ready_[group] = 1;
  cv_.notify_all();
}

void DenseOverlap::finish_step() {
  const auto start = std::chrono::steady_clock::now();
  std::unique_lock<std::mutex> lock(mu_);
  ELMO_CHECK(armed_, "DenseOverlap::finish_step without begin_step");
  for (int g = 0; g < num_groups(); ++g)
    ELMO_CHECK(ready_[g], "DenseOverlap::finish_step: group ", g, " (", groups_[g].params[0]->name,
               ", ...) was never reported ready by the backward");
  cv_.wait(lock, [&] { return done_; });
  armed_ = false;
  // CUDA: the reductions are queued (bf16: the widening may still run); order this thread's
  // stream after them. Recorded by the worker before it set done_.
  if (device_.is_cuda() && !error_) reduced_->wait(current_stream());
  last_wait_s_ =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
}

void DenseOverlap::reduce(int group) {
  const Group& g = groups_[group];
  float* segment = bucket_ + g.offset;
  float* at = segment;
  if (device_.is_cuda()) events_[group]->wait(current_stream());
  for (const Parameter* p : g.params) {
    copy_floats(device_, at, p->grad.data<float>(), p->grad.numel());
    at += p->grad.numel();
  }
  const int64_t count = counts_[group];
  const int64_t piece = max_piece_ > 0 ? max_piece_ : count;
  if (!bf16_) {
    for (int64_t done = 0; done < count; done += piece)
      allreduce_.sum(segment + done, std::min(piece, count - done));
    return;
  }
  auto* words = static_cast<uint16_t*>(scratch_.raw());
  floats_to_bf16(device_, segment, words, count);
  for (int64_t done = 0; done < count; done += piece)
    allreduce_.sum_bf16(words + done, std::min(piece, count - done));
  bf16_to_floats(device_, words, segment, count);
}

void DenseOverlap::run() {
  std::unique_ptr<StreamGuard> on_stream;
  if (device_.is_cuda()) {
    cuda_set_device(device_.index);
    on_stream = std::make_unique<StreamGuard>(stream_->get());
  }
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait(lock, [&] { return stop_ || (armed_ && !done_); });
    if (stop_) return;
    std::exception_ptr error;
    for (int g = 0; g < num_groups() && !error; ++g) {
      cv_.wait(lock, [&] { return stop_ || ready_[g]; });
      if (stop_) return;
      lock.unlock();
      try {
        reduce(g);
      } catch (...) {
        error = std::current_exception();
      }
      lock.lock();
    }
    if (device_.is_cuda() && !error) {
      try {
        reduced_->record(current_stream());
      } catch (...) {
        error = std::current_exception();
      }
    }
    error_ = error;
    done_ = true;
    cv_.notify_all();
  }
}

}  // namespace elmo
