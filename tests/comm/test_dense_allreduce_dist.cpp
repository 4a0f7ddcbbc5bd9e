// Gloo all-reduce with 2 and 4 rank processes on loopback: exact sums of crafted inputs (small
// integers, whatever the reduction order), several-MB buffers, doubles, bitwise-identical
// results of arbitrary floats on every rank, barriers, and a peer that dies.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <map>
#include <random>
#include <thread>

#include "comm/dense_allreduce.h"
#include "comm/rendezvous.h"
#include "rank_processes.h"

namespace elmo {
namespace {

using testing::kTestToken;
using testing::rank_expect;
using testing::run_rank_processes;

KvClientOptions rank_options(int port, int rank) {
  return testing::rank_options(port, rank, /*timeout_s=*/30);
}

Topology topology_of(int rank, int world) { return Topology{rank, world, rank, world, 0}; }

// Input of rank r at index i: a small integer, so every partial sum is exact in f32.
float crafted(int64_t i, int rank) { return static_cast<float>((i * 7 + rank * 3) % 17 - 8); }

uint64_t fnv1a(const void* data, size_t bytes) {
  uint64_t h = 1469598103934665603ull;
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < bytes; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

void sums_are_exact_and_identical(int world) {
  auto body = [world](int rank, int port) {
    KvClient client(rank_options(port, rank));
    auto allreduce = make_gloo_allreduce(client, topology_of(rank, world), "127.0.0.1", 30);
    rank_expect(allreduce->backend() == "gloo", "backend name");

    for (int64_t count : {int64_t{1}, int64_t{7}, int64_t{1000}, int64_t{262147},
                          int64_t{3'000'000}}) {  // up to 12 MB
      std::vector<float> data(count);
      for (int64_t i = 0; i < count; ++i) data[i] = crafted(i, rank);
      allreduce->sum(data.data(), count);
      int64_t wrong = 0;
      int64_t first = -1;
      for (int64_t i = 0; i < count; ++i) {
        float expected = 0;
        for (int r = 0; r < world; ++r) expected += crafted(i, r);
        if (data[i] != expected && wrong++ == 0) first = i;
      }
      rank_expect(wrong == 0, str(wrong, " wrong of ", count, " floats, first at ", first, ": ",
                                  first >= 0 ? data[first] : 0.f));
    }

    const int64_t doubles = 1'000'000;
    std::vector<double> d(doubles);
    for (int64_t i = 0; i < doubles; ++i) d[i] = 0.5 * static_cast<double>(i % 1000) + rank;
    allreduce->sum(d.data(), doubles);
    for (int64_t i = 0; i < doubles; ++i) {
      const double expected = world * 0.5 * static_cast<double>(i % 1000) + world * (world - 1) / 2;
      rank_expect(d[i] == expected, str("double ", i, ": ", d[i], " != ", expected));
    }

    // Arbitrary floats: the sum depends on the order, but every rank must hold the same bits.
    std::mt19937 engine(1234 + rank);
    std::uniform_real_distribution<float> uniform(-1.f, 1.f);
    std::vector<float> noise(1'000'003);
    for (float& x : noise) x = uniform(engine);
    allreduce->sum(noise.data(), static_cast<int64_t>(noise.size()));
    client.set("hash/" + std::to_string(rank),
               std::to_string(fnv1a(noise.data(), noise.size() * sizeof(float))));
    const std::vector<std::string> hashes = client.gather_ranks("hash/", world);
    for (int r = 1; r < world; ++r)
      rank_expect(hashes[r] == hashes[0], str("rank ", r, "'s result differs from rank 0's"));

    for (int i = 0; i < 3; ++i) allreduce->barrier();
    allreduce->sum(static_cast<float*>(nullptr), 0);  // a no-op
    try {
      uint16_t half[2] = {0, 0};
      allreduce->sum_bf16(half, 2);
      rank_expect(false, "Gloo accepted bf16");
    } catch (const CommError& e) {
      rank_expect(std::string(e.what()).find("no bf16 sum") != std::string::npos, e.what());
    }
    client.barrier("end", world);
    client.leave();
  };
  EXPECT_TRUE(run_rank_processes(world, body, 55));
}

TEST(GlooAllreduce, TwoRanksSumExactlyAndIdentically) { sums_are_exact_and_identical(2); }

TEST(GlooAllreduce, FourRanksSumExactlyAndIdentically) { sums_are_exact_and_identical(4); }

TEST(GlooAllreduce, ADeadPeerFailsTheCollectiveWithinTheTimeout) {
  auto body = [](int rank, int port) {
    KvClient client(rank_options(port, rank));
    auto allreduce = make_gloo_allreduce(client, topology_of(rank, 2), "127.0.0.1", 5);
    client.barrier("connected", 2);
    if (rank == 1) ::_exit(0);
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    std::vector<float> data(1000, 1.f);
    const auto start = std::chrono::steady_clock::now();
    try {
      allreduce->sum(data.data(), 1000);
      rank_expect(false, "the all-reduce with a dead peer succeeded");
    } catch (const CommError& e) {
      const std::string what = e.what();
      rank_expect(what.find("Gloo all-reduce of 1000 floats failed on rank 0") == 0,
                  "message: " + what);
    }
    rank_expect(std::chrono::steady_clock::now() - start < std::chrono::seconds(15),
                "the failure took longer than the timeout");
    try {
      allreduce->sum(data.data(), 1000);
      rank_expect(false, "a second all-reduce after the failure succeeded");
    } catch (const CommError& e) {
      rank_expect(std::string(e.what()).find("after an earlier failure") != std::string::npos,
                  e.what());
    }
  };
  EXPECT_TRUE(run_rank_processes(2, body, 50));
}

TEST(GlooAllreduce, AHungPeerFailsTheCollectiveAfterTheTimeout) {
  auto body = [](int rank, int port) {
    KvClient client(rank_options(port, rank));
    auto allreduce = make_gloo_allreduce(client, topology_of(rank, 2), "127.0.0.1", 2);
    client.barrier("connected", 2);
    if (rank == 1) {  // alive but never joins the collective
      std::this_thread::sleep_for(std::chrono::seconds(6));
      return;
    }
    std::vector<float> data(1000, 1.f);
    const auto start = std::chrono::steady_clock::now();
    try {
      allreduce->sum(data.data(), 1000);
      rank_expect(false, "the all-reduce with a hung peer succeeded");
    } catch (const CommError& e) {
      rank_expect(
          std::string(e.what()).find("Gloo all-reduce of 1000 floats failed on rank 0") == 0,
          e.what());
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    rank_expect(seconds > 1.5 && seconds < 5.5,
                str("the hung peer was noticed after ", seconds, " s; the timeout is 2 s"));
  };
  EXPECT_TRUE(run_rank_processes(2, body, 50));
}

// A KvStore that no one may touch: a world of one needs no rendezvous.
class UntouchableStore : public KvStore {
 public:
  void set(const std::string& key, const std::string&) override { ADD_FAILURE() << key; }
  std::string get(const std::string& key, double) override {
    ADD_FAILURE() << key;
    return "";
  }
};

TEST(GlooAllreduce, AWorldOfOneIsANoOp) {
  UntouchableStore store;
  auto allreduce = make_gloo_allreduce(store, Topology{}, "127.0.0.1", 1);
  std::vector<float> data = {1.5f, -2.f};
  allreduce->sum(data.data(), 2);
  EXPECT_EQ(data, (std::vector<float>{1.5f, -2.f}));
  allreduce->barrier();
  EXPECT_EQ(allreduce->backend(), "gloo");
}

TEST(NcclAllreduce, WithoutAGpuItSaysSo) {
  UntouchableStore store;
  // Device 99 exists on no machine: the error names the device and the GPU count.
  try {
    make_nccl_allreduce(store, Topology{}, 99, 1);
    ADD_FAILURE() << "no error";
  } catch (const CommError& e) {
    EXPECT_NE(std::string(e.what()).find("asks for device 99"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace elmo
