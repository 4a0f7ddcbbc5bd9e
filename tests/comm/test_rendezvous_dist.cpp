// The rendezvous with real rank processes (fork): joining, clean leaving, a rank dying without
// leave, and two processes claiming the same rank.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>

#include "comm/rendezvous.h"
#include "rank_processes.h"

namespace elmo {
namespace {

using testing::kTestToken;
using testing::rank_expect;
using testing::run_rank_processes;

KvClientOptions rank_options(int port, int rank) {
  return testing::rank_options(port, rank, /*timeout_s=*/20, /*heartbeat_interval_s=*/0.2);
}

TEST(RendezvousDist, RanksJoinGatherAndLeaveCleanly) {
  constexpr int kWorld = 4;
  auto body = [](int rank, int port) {
    KvClient client(rank_options(port, rank));
    client.start_monitor([](const PeerLost&) {});
    client.set("join/" + std::to_string(rank), "pid " + std::to_string(::getpid()));
    const std::vector<std::string> all = client.gather_ranks("join/", kWorld);
    rank_expect(all.size() == kWorld, "gather size");
    for (int r = 0; r < kWorld; ++r) rank_expect(all[r].rfind("pid ", 0) == 0, "gather value");
    rank_expect(client.add("count", 1) <= kWorld, "counter");
    client.barrier("done", kWorld);
    rank_expect(client.get("count") == std::to_string(kWorld), "every rank counted");
    rank_expect(!client.fault().has_value(), "no fault expected");
    client.leave();
  };
  EXPECT_TRUE(run_rank_processes(kWorld, body, 50, {}, [&](KvServer& server) {
    EXPECT_EQ(server.wait_for_job(kWorld, 10), JobState::kFinished);
    EXPECT_FALSE(server.fault().has_value()) << *server.fault();
    EXPECT_EQ(server.joined_ranks(), (std::vector<int>{0, 1, 2, 3}));
  }));
}

TEST(RendezvousDist, ADeadRankIsReportedToEveryOtherRankWithin10Seconds) {
  constexpr int kWorld = 3;
  constexpr int kVictim = 2;
  auto body = [](int rank, int port) {
    KvClient client(rank_options(port, rank));
    std::mutex mutex;
    std::optional<PeerLost> seen;
    client.start_monitor([&](const PeerLost& lost) {
      std::lock_guard<std::mutex> lock(mutex);
      seen = lost;
    });
    client.barrier("up", kWorld);
    if (rank == kVictim) ::_exit(0);  // dies without leave()
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    for (;;) {
      {
        std::lock_guard<std::mutex> lock(mutex);
        if (seen) break;
      }
      rank_expect(std::chrono::steady_clock::now() < deadline,
                  "no PeerLost within 10 s of rank 2's death");
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    std::lock_guard<std::mutex> lock(mutex);
    rank_expect(seen->rank() == kVictim, "PeerLost names rank " + std::to_string(seen->rank()));
    const std::string what = seen->what();
    rank_expect(what.find("rank 2 (pid ") == 0 && what.find("was lost") != std::string::npos,
                "message: " + what);
    // A later wait fails at once with the same fault instead of running into its timeout.
    try {
      client.get("never", 20);
      rank_expect(false, "get after a fault succeeded");
    } catch (const PeerLost& lost) {
      rank_expect(lost.rank() == kVictim, "get's PeerLost names the dead rank");
    }
  };
  EXPECT_TRUE(run_rank_processes(kWorld, body, 50, {}, [&](KvServer& server) {
    ASSERT_TRUE(server.fault().has_value());
    EXPECT_EQ(server.fault_rank(), kVictim);
    EXPECT_EQ(server.wait_for_job(kWorld, 0), JobState::kFailed);
  }));
}

TEST(RendezvousDist, TwoProcessesClaimingOneRankAreRefused) {
  auto body = [](int process, int port) {
    // Both processes claim rank 1; the one that comes second is refused.
    std::this_thread::sleep_for(std::chrono::milliseconds(process * 300));
    try {
      KvClient client(rank_options(port, 1));
      client.barrier("both-tried", 2);
      client.leave();
    } catch (const CommError& e) {
      const std::string what = e.what();
      rank_expect(process == 1, "the first process was refused: " + what);
      rank_expect(what.find("refused this process (rank 1): rank 1 already joined from pid") !=
                      std::string::npos,
                  "message: " + what);
      // Let the first one through its barrier.
      KvClientOptions helper = rank_options(port, -1);
      KvClient other(helper);
      other.barrier("both-tried", 2);
      return;
    }
    rank_expect(process == 0, "the second process was accepted");
  };
  EXPECT_TRUE(run_rank_processes(2, body, 50));
}

}  // namespace
}  // namespace elmo
