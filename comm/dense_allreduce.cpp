// The Gloo backend of DenseAllreduce: TCP pairs between every two ranks, ring all-reduce.
// Gloo's rendezvous runs over the job's KvStore through a small adapter.
#include "comm/dense_allreduce.h"

#include <gloo/allreduce.h>
#include <gloo/barrier.h>
#include <gloo/math.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/device.h>

#include <algorithm>
#include <chrono>
#include <map>

#include "comm/rendezvous.h"

namespace elmo {

DenseAllreduce::~DenseAllreduce() = default;

void DenseAllreduce::sum_bf16(uint16_t*, int64_t) {
  throw CommError(str("the ", backend(), " all-reduce has no bf16 sum; use f32 buffers"));
}

namespace {

std::chrono::milliseconds to_ms(double seconds) {
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000.0));
}

// gloo::rendezvous::Store over our KvStore, keys under a prefix. Values read by wait() are kept
// so that Gloo's get() after wait() costs no second round trip.
class GlooStore : public gloo::rendezvous::Store {
 public:
  GlooStore(KvStore& store, std::string prefix, double timeout_s)
      : store_(store), prefix_(std::move(prefix)), timeout_s_(timeout_s) {}

  void set(const std::string& key, const std::vector<char>& data) override {
    store_.set(prefix_ + key, std::string(data.begin(), data.end()));
  }
  std::vector<char> get(const std::string& key) override {
    auto it = cache_.find(key);
    const std::string value =
        it != cache_.end() ? it->second : store_.get(prefix_ + key, timeout_s_);
    return std::vector<char>(value.begin(), value.end());
  }
  void wait(const std::vector<std::string>& keys) override { wait(keys, to_ms(timeout_s_)); }
  void wait(const std::vector<std::string>& keys,
            const std::chrono::milliseconds& timeout) override {
    const double seconds = timeout.count() > 0 ? timeout.count() / 1000.0 : timeout_s_;
    for (const std::string& key : keys) cache_[key] = store_.get(prefix_ + key, seconds);
  }

 private:
  KvStore& store_;
  std::string prefix_;
  double timeout_s_;
  std::map<std::string, std::string> cache_;
};

class GlooAllreduce : public DenseAllreduce {
 public:
  GlooAllreduce(KvStore& store, const Topology& topology, const std::string& local_address,
                double timeout_s, const std::string& name)
      : topology_(topology), timeout_s_(timeout_s) {
    ELMO_REQUIRE(timeout_s > 0, "the Gloo all-reduce timeout must be > 0 (got ", timeout_s, ")");
    if (topology.world_size == 1) return;  // nothing to connect; every call is a no-op
    try {
      gloo::transport::tcp::attr attr;
      attr.hostname = local_address;
      device_ = gloo::transport::tcp::CreateDevice(attr);
      auto context =
          std::make_shared<gloo::rendezvous::Context>(topology.rank, topology.world_size);
      context->setTimeout(to_ms(timeout_s));
      GlooStore gloo_store(store, str("gloo/", name, "/"), timeout_s);
      context->connectFullMesh(gloo_store, device_);
      context_ = std::move(context);
    } catch (const PeerLost&) {
      throw;
    } catch (const std::exception& e) {
      throw CommError(str("Gloo could not connect ", topology.label(), " (listening on ",
                          local_address, ") to its ", topology.world_size - 1, " peer(s) within ",
                          format_seconds(timeout_s), ": ", e.what(),
                          "; check that every rank reaches the others' addresses (firewalls, "
                          "--root_uri) and that all of them started"));
    }
  }

  void sum(float* data, int64_t count) override { run_sum(data, count, "floats"); }
  void sum(double* data, int64_t count) override { run_sum(data, count, "doubles"); }

  void barrier() override {
    if (!context_) return;
    check_usable("barrier");
    try {
      gloo::BarrierOptions options(context_);
      options.setTag(next_tag());
      options.setTimeout(to_ms(timeout_s_));
      gloo::barrier(options);
    } catch (const std::exception& e) {
      failed_ = str("Gloo barrier failed on rank ", topology_.rank, ": ", e.what());
      throw CommError(failed_ + hint());
    }
  }

  std::string backend() const override { return "gloo"; }

 private:
  // Gloo works on size_t element counts, but very large single operations are split so that no
  // internal byte count nears 2^31 on any path.
  static constexpr int64_t kChunkBytes = int64_t{1} << 28;

  template <typename T>
  void run_sum(T* data, int64_t count, const char* unit) {
    ELMO_CHECK(count >= 0, "all-reduce of ", count, " ", unit);
    if (!context_ || count == 0) return;
    check_usable("all-reduce");
    const int64_t chunk = kChunkBytes / static_cast<int64_t>(sizeof(T));
    try {
      for (int64_t begin = 0; begin < count; begin += chunk) {
        const int64_t n = std::min(chunk, count - begin);
        gloo::AllreduceOptions options(context_);
        options.setOutput(data + begin, static_cast<size_t>(n));
        options.setAlgorithm(gloo::AllreduceOptions::Algorithm::RING);
        options.setReduceFunction(
            static_cast<void (*)(void*, const void*, const void*, size_t)>(&gloo::sum<T>));
        options.setTag(next_tag());
        options.setTimeout(to_ms(timeout_s_));
        gloo::allreduce(options);
      }
    } catch (const std::exception& e) {
      failed_ = str("Gloo all-reduce of ", count, " ", unit, " failed on rank ", topology_.rank,
                    ": ", e.what());
      throw CommError(failed_ + hint());
    }
  }

  void check_usable(const char* what) const {
    if (!failed_.empty())
      throw CommError(str("Gloo ", what, " on rank ", topology_.rank, " after an earlier failure (",
                          failed_, ")"));
  }

  std::string hint() const {
    return str(
        " (a peer rank died, hung or is unreachable; every rank must call the same "
        "collectives in the same order; timeout ",
        format_seconds(timeout_s_), ")");
  }

  uint32_t next_tag() { return tag_++; }

  Topology topology_;
  double timeout_s_;
  std::shared_ptr<gloo::transport::Device> device_;
  std::shared_ptr<gloo::Context> context_;
  uint32_t tag_ = 0;
  std::string failed_;
};

}  // namespace

std::unique_ptr<DenseAllreduce> make_gloo_allreduce(KvStore& store, const Topology& topology,
                                                    const std::string& local_address,
                                                    double timeout_s, const std::string& name) {
  return std::make_unique<GlooAllreduce>(store, topology, local_address, timeout_s, name);
}

}  // namespace elmo
