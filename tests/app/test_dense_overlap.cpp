// DenseOverlap (app/dense_overlap.h) on the CPU: groups are reduced in the fixed order whatever
// order the backward reports them in, each from the gradients as they were when reported,
// errors reach finish_step, and an abandoned step does not hang the destructor. The all-reduce
// here is a recording stand-in for one peer (sum = doubling, as two equal ranks would give);
// real Gloo under DenseOverlap is exercised by tests/app/test_train_dist.cpp.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <mutex>
#include <thread>
#include <vector>

#include "app/dense_overlap.h"
#include "comm/kv_store.h"
#include "kernels/pointwise.h"
#include "runtime/error.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

class RecordingAllreduce : public DenseAllreduce {
 public:
  void sum(float* data, int64_t count) override {
    std::lock_guard<std::mutex> lock(mu);
    if (fail_at == static_cast<int>(calls.size())) throw CommError("peer 1 went away");
    calls.push_back({data, count});
    for (int64_t i = 0; i < count; ++i) data[i] *= 2.0f;
  }
  void sum(double*, int64_t) override { ADD_FAILURE() << "double sum"; }
  void sum_bf16(uint16_t* data, int64_t count) override {
    std::lock_guard<std::mutex> lock(mu);
    bf16_calls.push_back(count);
    for (int64_t i = 0; i < count; ++i) {
      float f;
      bf16_to_floats(Device::cpu(), data + i, &f, 1);
      data[i] = float_to_bf16_bits(2.0f * f);
    }
  }
  void barrier() override {}
  std::string backend() const override { return "recording"; }

  std::mutex mu;
  std::vector<std::pair<float*, int64_t>> calls;
  std::vector<int64_t> bf16_calls;
  int fail_at = -1;
};

struct Model {
  ParameterStore store;
  std::vector<DenseOverlap::Group> groups;
  std::vector<float> bucket;
  Model() {
    // Two groups of two parameters each, laid out group after group.
    int64_t offset = 0;
    for (int g = 0; g < 2; ++g) {
      DenseOverlap::Group group;
      group.offset = offset;
      for (int i = 0; i < 2; ++i) {
        Parameter& p = store.add(str("p", g, i), {3});
        group.params.push_back(&p);
        offset += 3;
      }
      groups.push_back(group);
    }
    bucket.assign(static_cast<size_t>(offset), 0.0f);
  }
  void set_grads(int g, float base) {
    for (size_t i = 0; i < groups[g].params.size(); ++i) {
      float* v = groups[g].params[i]->grad.data<float>();
      for (int e = 0; e < 3; ++e) v[e] = base + 10.0f * static_cast<float>(i) + e;
    }
  }
};

TEST(DenseOverlap, ReducesGroupsInTheFixedOrderWhateverOrderTheyAreReported) {
  Model m;
  RecordingAllreduce allreduce;
  DenseOverlap overlap(m.groups, m.bucket.data(), allreduce, Device::cpu(), 0);
  for (int step = 0; step < 3; ++step) {
    allreduce.calls.clear();
    overlap.begin_step();
    m.set_grads(1, 100.0f * step);
    overlap.ready(1);  // the second group first: it must wait for group 0
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    {
      std::lock_guard<std::mutex> lock(allreduce.mu);
      EXPECT_TRUE(allreduce.calls.empty()) << "group 1 was reduced before group 0";
    }
    m.set_grads(0, 1000.0f + step);
    overlap.ready(0);
    overlap.finish_step();
    ASSERT_EQ(allreduce.calls.size(), 2u);
    EXPECT_EQ(allreduce.calls[0], (std::pair<float*, int64_t>{m.bucket.data(), 6}));
    EXPECT_EQ(allreduce.calls[1], (std::pair<float*, int64_t>{m.bucket.data() + 6, 6}));
    for (int g = 0; g < 2; ++g)
      for (int i = 0; i < 2; ++i)
        for (int e = 0; e < 3; ++e) {
          const float base = g == 0 ? 1000.0f + step : 100.0f * step;
          EXPECT_EQ(m.bucket[g * 6 + i * 3 + e], 2.0f * (base + 10.0f * i + e));
        }
  }
}

TEST(DenseOverlap, SplitsLongGroupsIntoPieces) {
  Model m;
  RecordingAllreduce allreduce;
  DenseOverlap overlap(m.groups, m.bucket.data(), allreduce, Device::cpu(), 4);
  overlap.begin_step();
  overlap.ready(0);
  overlap.ready(1);
  overlap.finish_step();
  ASSERT_EQ(allreduce.calls.size(), 4u);  // 6 floats per group: 4 + 2, twice
  EXPECT_EQ(allreduce.calls[1], (std::pair<float*, int64_t>{m.bucket.data() + 4, 2}));
  EXPECT_EQ(allreduce.calls[2], (std::pair<float*, int64_t>{m.bucket.data() + 6, 4}));
}

// bf16: the bucket receives the widened bf16 sum of the bf16-rounded gradients.
TEST(DenseOverlap, Bf16SumsTheRoundedGradients) {
  Model m;
  RecordingAllreduce allreduce;
  DenseOverlap overlap(m.groups, m.bucket.data(), allreduce, Device::cpu(), 4, /*bf16=*/true);
  overlap.begin_step();
  m.set_grads(0, 1.0f / 3.0f);
  m.set_grads(1, 1000.1f);
  overlap.ready(0);
  overlap.ready(1);
  overlap.finish_step();
  EXPECT_TRUE(allreduce.calls.empty());
  EXPECT_EQ(allreduce.bf16_calls, (std::vector<int64_t>{4, 2, 4, 2}));
  for (int g = 0; g < 2; ++g)
    for (int at = 0; at < 2; ++at) {
      const float* grad = m.groups[g].params[at]->grad.data<float>();
      for (int e = 0; e < 3; ++e) {
        float rounded;
        const uint16_t word = float_to_bf16_bits(grad[e]);
        bf16_to_floats(Device::cpu(), &word, &rounded, 1);
        EXPECT_EQ(m.bucket[g * 6 + at * 3 + e], 2.0f * rounded);
        EXPECT_NE(rounded, grad[e]);  // these values are not bf16 numbers
      }
    }
}

TEST(DenseOverlap, ReportsTheAllreduceErrorAndMisuse) {
  Model m;
  RecordingAllreduce allreduce;
  allreduce.fail_at = 1;
  DenseOverlap overlap(m.groups, m.bucket.data(), allreduce, Device::cpu(), 0);
  EXPECT_THAT(testing::error_of([&] { overlap.ready(0); }), ::testing::HasSubstr("outside a step"));
  overlap.begin_step();
  overlap.ready(0);
  EXPECT_THAT(testing::error_of([&] { overlap.ready(0); }), ::testing::HasSubstr("called twice"));
  overlap.ready(1);
  EXPECT_THROW(overlap.finish_step(), CommError);
  // The next step works again once the peer answers.
  allreduce.fail_at = -1;
  overlap.begin_step();
  overlap.ready(0);
  overlap.ready(1);
  EXPECT_NO_THROW(overlap.finish_step());
}

TEST(DenseOverlap, AnAbandonedStepDoesNotHangTheDestructor) {
  Model m;
  RecordingAllreduce allreduce;
  const auto start = std::chrono::steady_clock::now();
  {
    DenseOverlap overlap(m.groups, m.bucket.data(), allreduce, Device::cpu(), 0);
    overlap.begin_step();
    overlap.ready(0);  // the backward "threw" before group 1
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  // finish_step names a group the backward never reported instead of waiting for it.
  DenseOverlap overlap(m.groups, m.bucket.data(), allreduce, Device::cpu(), 0);
  overlap.begin_step();
  overlap.ready(0);
  EXPECT_THAT(testing::error_of([&] { overlap.finish_step(); }),
              ::testing::HasSubstr("never reported ready"));
}

}  // namespace
}  // namespace elmo
