// Launchers with real processes: the local launcher with shell children (exit codes, stopping
// the others, nothing left behind), and a scheduler with two node supervisors whose ranks are
// this test binary re-executed (see RankChild below).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <future>
#include <thread>

#include "comm/launch.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

using Clock = std::chrono::steady_clock;

// ---- the rank side of the scheduler tests ---------------------------------------------------
// A node supervisor re-executes this binary with ELMO_RANK etc. set; with ELMO_TEST_RANK_CHILD
// also set, the process acts as a rank before GoogleTest starts and exits with the rank's code:
// join the job, meet the other ranks in a barrier, finish cleanly. Mode "fail": rank 1 exits
// with code 3 right after joining, the others must see the fault in their barrier (exit 1).
int run_rank_child(const std::string& mode) {
  try {
    const ProcessPlan plan = plan_process({}, current_environment(), 0);
    if (plan.kind != ProcessKind::kRank) return 90;
    std::unique_ptr<RankSession> session = RankSession::join(plan, [](const PeerLost&) {});
    const int rank = session->topology().rank;
    if (mode == "fail" && rank == 1) return 3;
    session->store().barrier("work", session->topology().world_size, 30);
    session->finish();
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank child: %s\n", e.what());
    return 1;
  }
}

const bool kRankChild = [] {
  const char* mode = std::getenv("ELMO_TEST_RANK_CHILD");
  if (mode != nullptr && std::getenv("ELMO_RANK") != nullptr) {
    const int code = run_rank_child(mode);
    std::fflush(stderr);
    std::_Exit(code);
  }
  return false;
}();

// ---- helpers ---------------------------------------------------------------------------------

// Alive and not a zombie.
bool process_alive(pid_t pid) {
  if (::kill(pid, 0) != 0) return false;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(stat, line);
  const auto close_paren = line.rfind(')');
  return close_paren == std::string::npos || close_paren + 2 >= line.size() ||
         line[close_paren + 2] != 'Z';
}

pid_t read_pid(const std::string& path, double wait_s = 5) {
  const auto deadline = Clock::now() + std::chrono::duration<double>(wait_s);
  while (Clock::now() < deadline) {
    std::ifstream in(path);
    pid_t pid = 0;
    if (in >> pid && pid > 0) return pid;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return -1;
}

ProcessPlan local_plan(int nodes, int workers) {
  LaunchOptions o;
  o.nodes = nodes;
  o.workers_per_node = workers;
  return plan_process(o, {}, 0, "h");
}

SpawnOptions shell(double grace_s = 10) {
  SpawnOptions spawn;
  spawn.executable = "/bin/sh";
  spawn.grace_s = grace_s;
  spawn.forward_signals = false;
  return spawn;
}

// ---- local launcher --------------------------------------------------------------------------

TEST(LocalLauncher, EveryRankSeesItsVariablesAndSuccessIsZero) {
  const std::string dir = testing::temp_dir("launch_ok");
  const std::string script =
      "test \"$ELMO_WORLD_SIZE\" = 4 && test \"$ELMO_NODES\" = 2 && "
      "test \"$ELMO_LOCAL_SIZE\" = 2 && test \"$ELMO_ROOT_URI\" = 127.0.0.1 && "
      "test -n \"$ELMO_JOB_TOKEN\" && test \"$ELMO_DEVICE_ID\" = -1 && "
      "test \"$ELMO_NODE\" = $((ELMO_RANK / 2)) && test \"$ELMO_LOCAL_RANK\" = $((ELMO_RANK % 2)) "
      "&& echo $ELMO_ROOT_PORT > " +
      dir + "/$ELMO_RANK.port && exit 0; exit 9";
  EXPECT_EQ(run_local_launcher(local_plan(2, 2), {"sh", "-c", script}, shell()), 0);
  std::string port;
  for (int r = 0; r < 4; ++r) {
    std::ifstream in(dir + "/" + std::to_string(r) + ".port");
    std::string p;
    in >> p;
    EXPECT_FALSE(p.empty()) << "rank " << r;
    if (r == 0) port = p;
    EXPECT_EQ(p, port) << "every rank gets the same rendezvous port";
  }
}

TEST(LocalLauncher, TheFirstFailureDecidesTheCodeAndNoProcessIsLeft) {
  const std::string dir = testing::temp_dir("launch_fail");
  const std::string script = "echo $$ > " + dir +
                             "/$ELMO_RANK.pid; if [ \"$ELMO_RANK\" = 1 ]; then sleep 0.5; exit 3; "
                             "fi; exec sleep 30";
  const auto start = Clock::now();
  ::testing::internal::CaptureStderr();
  const int code = run_local_launcher(local_plan(1, 3), {"sh", "-c", script}, shell());
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(code, 3);
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(15));
  EXPECT_NE(log.find("rank 1 exited with code 3; stopping the other ranks"), std::string::npos)
      << log;
  for (int r : {0, 2}) {
    const pid_t pid = read_pid(dir + "/" + std::to_string(r) + ".pid");
    ASSERT_GT(pid, 0) << "rank " << r;
    EXPECT_FALSE(process_alive(pid)) << "rank " << r << " (pid " << pid << ") survived";
  }
}

TEST(LocalLauncher, ARankKilledBySignalGives128PlusTheSignal) {
  const std::string script = "if [ \"$ELMO_RANK\" = 0 ]; then kill -9 $$; fi; exec sleep 30";
  EXPECT_EQ(run_local_launcher(local_plan(1, 2), {"sh", "-c", script}, shell()), 128 + SIGKILL);
}

TEST(LocalLauncher, ARankIgnoringSigtermIsKilledAfterTheGrace) {
  const std::string dir = testing::temp_dir("launch_stubborn");
  // Rank 0 ignores SIGTERM, and so does the sleep it starts (an ignored signal stays ignored).
  const std::string script =
      "if [ \"$ELMO_RANK\" = 1 ]; then sleep 0.3; exit 5; fi; trap '' TERM; sleep 30 & echo $! > " +
      dir + "/sleep.pid; echo $$ > " + dir + "/shell.pid; wait; wait";
  const auto start = Clock::now();
  const int code = run_local_launcher(local_plan(1, 2), {"sh", "-c", script}, shell(1.0));
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  EXPECT_EQ(code, 5);
  EXPECT_GT(seconds, 1.0);  // it had to wait for the grace period
  EXPECT_LT(seconds, 10.0);
  for (const char* name : {"shell.pid", "sleep.pid"}) {
    const pid_t pid = read_pid(dir + "/" + name, 1);
    ASSERT_GT(pid, 0) << name;
    const auto deadline = Clock::now() + std::chrono::seconds(3);
    while (process_alive(pid) && Clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    EXPECT_FALSE(process_alive(pid)) << name << " (pid " << pid << ") survived";
  }
}

TEST(LocalLauncher, SigtermToTheLauncherIsForwardedToTheRanks) {
  const std::string dir = testing::temp_dir("launch_signal");
  const std::string script = "echo $$ > " + dir + "/$ELMO_RANK.pid; exec sleep 30";
  SpawnOptions spawn = shell();
  spawn.forward_signals = true;  // the launcher catches SIGTERM while it runs
  auto launcher = std::async(std::launch::async, [&] {
    return run_local_launcher(local_plan(1, 2), {"sh", "-c", script}, spawn);
  });
  const pid_t rank0 = read_pid(dir + "/0.pid");
  const pid_t rank1 = read_pid(dir + "/1.pid");
  ASSERT_GT(rank0, 0);
  ASSERT_GT(rank1, 0);
  ::kill(::getpid(), SIGTERM);
  ASSERT_EQ(launcher.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_EQ(launcher.get(), 128 + SIGTERM);
  EXPECT_FALSE(process_alive(rank0));
  EXPECT_FALSE(process_alive(rank1));
}

TEST(LocalLauncher, RanksDieWithTheirLauncher) {
  const std::string dir = testing::temp_dir("launch_orphans");
  const pid_t launcher = ::fork();  // a launcher process of its own, killed below
  if (launcher == 0) {
    const std::string script = "echo $$ > " + dir + "/$ELMO_RANK.pid; exec sleep 30";
    ::_exit(run_local_launcher(local_plan(1, 2), {"sh", "-c", script}, shell()));
  }
  const pid_t rank0 = read_pid(dir + "/0.pid");
  const pid_t rank1 = read_pid(dir + "/1.pid");
  ::kill(launcher, SIGKILL);
  ::waitpid(launcher, nullptr, 0);
  ASSERT_GT(rank0, 0);
  ASSERT_GT(rank1, 0);
  const auto deadline = Clock::now() + std::chrono::seconds(5);
  while ((process_alive(rank0) || process_alive(rank1)) && Clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_FALSE(process_alive(rank0));
  EXPECT_FALSE(process_alive(rank1));
}

TEST(LocalLauncher, AMissingExecutableFailsTheJob) {
  SpawnOptions spawn = shell();
  spawn.executable = "/nonexistent/elmo_fast";
  EXPECT_EQ(run_local_launcher(local_plan(1, 2), {"elmo_fast"}, spawn), 127);
}

// ---- scheduler and node supervisors -----------------------------------------------------------

struct ClusterResult {
  int scheduler = -1;
  int node0 = -1;
  int node1 = -1;
};

// One scheduler and two node supervisors (2 and 1 workers) in threads of this process; the ranks
// are this binary in rank-child mode.
ClusterResult run_cluster(const std::string& mode) {
  ::setenv("ELMO_TEST_RANK_CHILD", mode.c_str(), 1);
  const int port = testing::free_port();
  LaunchOptions scheduler_options;
  scheduler_options.role = "scheduler";
  scheduler_options.root_port = port;
  scheduler_options.world_size = 2;
  scheduler_options.job_token = "cluster-token";
  scheduler_options.timeout_s = 30;
  const ProcessPlan scheduler_plan = plan_process(scheduler_options, {}, 0, "h");
  auto node_plan = [&](int workers) {
    LaunchOptions o;
    o.role = "worker";
    o.root_uri = "127.0.0.1";
    o.root_port = port;
    o.workers_per_node = workers;
    o.job_token = "cluster-token";
    o.timeout_s = 30;
    return plan_process(o, {}, 0, "h");
  };
  SpawnOptions spawn;
  spawn.executable = "/proc/self/exe";
  spawn.grace_s = 3;
  spawn.forward_signals = false;
  const std::vector<std::string> argv = {"test_comm_dist"};

  ClusterResult result;
  auto scheduler = std::async(std::launch::async, [&] { return run_scheduler(scheduler_plan); });
  // Node 0 joins first (2 workers), then node 1 (1 worker): ranks 0-1 on node 0, 2 on node 1.
  auto node0 = std::async(std::launch::async,
                          [&] { return run_node_supervisor(node_plan(2), argv, spawn); });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto node1 = std::async(std::launch::async,
                          [&] { return run_node_supervisor(node_plan(1), argv, spawn); });
  result.node0 = node0.get();
  result.node1 = node1.get();
  result.scheduler = scheduler.get();
  ::unsetenv("ELMO_TEST_RANK_CHILD");
  return result;
}

TEST(Scheduler, TwoNodesRunTheirRanksToACleanFinish) {
  const auto start = Clock::now();
  const ClusterResult result = run_cluster("ok");
  EXPECT_EQ(result.scheduler, 0);
  EXPECT_EQ(result.node0, 0);
  EXPECT_EQ(result.node1, 0);
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(45));
}

TEST(Scheduler, AFailingRankStopsTheWholeJob) {
  const auto start = Clock::now();
  ::testing::internal::CaptureStderr();
  const ClusterResult result = run_cluster("fail");
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(result.scheduler, 1);
  EXPECT_EQ(result.node0, 3);  // rank 1 lives on node 0 and exited with 3
  EXPECT_EQ(result.node1, 1);  // rank 2 saw the fault in its barrier
  EXPECT_NE(log.find("the job failed: "), std::string::npos) << log;
  EXPECT_NE(log.find("rank 1"), std::string::npos) << log;
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(45));
}

TEST(Scheduler, MissingNodesAreNamedAfterTheTimeout) {
  LaunchOptions o;
  o.role = "scheduler";
  o.root_port = testing::free_port();
  o.world_size = 2;
  o.job_token = "t";
  o.timeout_s = 0.5;
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(run_scheduler(plan_process(o, {}, 0, "h")), 1);
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(log.find("only 0 of 2 node(s) joined the rendezvous"), std::string::npos) << log;
  EXPECT_NE(log.find("2 missing"), std::string::npos) << log;
}

}  // namespace
}  // namespace elmo
