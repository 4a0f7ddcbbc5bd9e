// NCCL all-reduce on one GPU: a one-rank communicator (two ranks cannot share a GPU), which
// checks initialisation through the store, the sum path, bf16, barriers and a clean teardown
// with the watchdog running. Skips without a GPU.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <map>
#include <vector>

#include "comm/dense_allreduce.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

class MapStore : public KvStore {
 public:
  void set(const std::string& key, const std::string& value) override { values_[key] = value; }
  std::string get(const std::string& key, double) override {
    auto it = values_.find(key);
    if (it == values_.end()) throw CommError("missing " + key);
    return it->second;
  }
  size_t size() const { return values_.size(); }

 private:
  std::map<std::string, std::string> values_;
};

TEST(NcclAllreduceGpu, OneRankSumsInPlace) {
  ELMO_SKIP_WITHOUT_GPU();
  MapStore store;
  auto allreduce = make_nccl_allreduce(store, Topology{}, 0, 30);
  EXPECT_EQ(allreduce->backend(), "nccl");
  EXPECT_EQ(store.size(), 1u);  // rank 0 published the unique id

  const int64_t count = 1 << 20;
  std::vector<float> host(count);
  for (int64_t i = 0; i < count; ++i) host[i] = static_cast<float>(i % 97) - 48.f;
  float* device = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&device), count * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(device, host.data(), count * sizeof(float), cudaMemcpyHostToDevice),
            cudaSuccess);
  for (int round = 0; round < 3; ++round) allreduce->sum(device, count);
  std::vector<float> back(count);
  ASSERT_EQ(cudaMemcpy(back.data(), device, count * sizeof(float), cudaMemcpyDeviceToHost),
            cudaSuccess);
  EXPECT_EQ(back, host);  // a world of one: the sum is the input
  allreduce->barrier();

  double* doubles = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&doubles), 16 * sizeof(double)), cudaSuccess);
  ASSERT_EQ(cudaMemset(doubles, 0, 16 * sizeof(double)), cudaSuccess);
  allreduce->sum(doubles, 16);
  uint16_t* halves = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&halves), 16 * sizeof(uint16_t)), cudaSuccess);
  std::vector<uint16_t> bf16(16, 0x3f80);  // 1.0
  ASSERT_EQ(cudaMemcpy(halves, bf16.data(), 16 * sizeof(uint16_t), cudaMemcpyHostToDevice),
            cudaSuccess);
  allreduce->sum_bf16(halves, 16);
  std::vector<uint16_t> bf16_back(16);
  ASSERT_EQ(cudaMemcpy(bf16_back.data(), halves, 16 * sizeof(uint16_t), cudaMemcpyDeviceToHost),
            cudaSuccess);
  EXPECT_EQ(bf16_back, bf16);
  allreduce.reset();  // finalize + destroy, watchdog stopped
  cudaFree(device);
  cudaFree(doubles);
  cudaFree(halves);
}

TEST(NcclAllreduceGpu, AMissingUniqueIdTimesOut) {
  ELMO_SKIP_WITHOUT_GPU();
  MapStore store;  // rank 1 of 2 waits for rank 0's id, which never comes
  try {
    make_nccl_allreduce(store, Topology{1, 2, 1, 2, 0}, 0, 1);
    ADD_FAILURE() << "no error";
  } catch (const CommError& e) {
    EXPECT_NE(std::string(e.what()).find("nccl/dense/id"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace elmo
