// Multi-process tests of comm/sparse_exchange over UCX on loopback TCP: N ranks are forked
// processes (forked before any thread exists), meeting through a folder-backed KvStore.
// Every rank runs the same deterministic training-like loop and checks, bit for bit, each
// fetched row and each summed gradient against a one-process simulation of all ranks, with and
// without prefetch; plus empty id lists, a peer killed mid-run, a silent peer (timeout) and
// mismatched tables.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <sstream>
#include <thread>

#include "comm/sparse_exchange.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// A cross-process KvStore: one file per key in a shared folder, written to a temporary name
// and renamed (atomic), read by polling until it exists.
class FolderKvStore : public KvStore {
 public:
  explicit FolderKvStore(std::string dir) : dir_(std::move(dir)) {}
  void set(const std::string& key, const std::string& value) override {
    const std::string path = file_of(key);
    const std::string temporary = str(path, ".tmp.", getpid());
    std::ofstream(temporary, std::ios::binary) << value;
    fs::rename(temporary, path);
  }
  std::string get(const std::string& key, double timeout_s) override {
    const auto start = Clock::now();
    const std::string path = file_of(key);
    while (!fs::exists(path)) {
      if (seconds_since(start) > (timeout_s < 0 ? 30.0 : timeout_s))
        throw CommError(str("FolderKvStore: key '", key, "' not set within ", timeout_s, " s"));
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

 private:
  std::string file_of(std::string key) const {
    std::replace(key.begin(), key.end(), '/', '_');
    return dir_ + "/" + key;
  }
  std::string dir_;
};

// ---------------------------------------------------------------------------------------------
// Forked ranks

struct RankOutcome {
  bool exited = false;
  int exit_code = -1;
  int signal = 0;
  std::string report;  // what the rank wrote (error text or stats)
};

// Runs body(rank) in `world` forked processes. A child's exit code is 0 when body returns
// "" (1 otherwise, or on an exception), and it writes its text to <dir>/rank<r>.txt.
std::vector<RankOutcome> run_ranks(int world, const std::string& dir,
                                   const std::function<std::string(int)>& body,
                                   double limit_s = 50.0) {
  setenv("UCX_TLS", "tcp", 0);
  setenv("UCX_NET_DEVICES", "lo", 0);
  std::vector<pid_t> pids(world);
  for (int rank = 0; rank < world; ++rank) {
    pids[rank] = fork();
    if (pids[rank] == 0) {
      std::string report;
      bool ok = false;
      try {
        report = body(rank);
        ok = report.empty() || report.rfind("ok", 0) == 0;
      } catch (const std::exception& e) {
        report = str("exception: ", e.what());
      }
      std::ofstream(str(dir, "/rank", rank, ".txt")) << report;
      _exit(ok ? 0 : 1);
    }
  }
  std::vector<RankOutcome> outcomes(world);
  std::vector<bool> done(world, false);
  const auto start = Clock::now();
  int remaining = world;
  while (remaining > 0) {
    for (int rank = 0; rank < world; ++rank) {
      if (done[rank]) continue;
      int status = 0;
      if (waitpid(pids[rank], &status, WNOHANG) == pids[rank]) {
        done[rank] = true;
        --remaining;
        outcomes[rank].exited = WIFEXITED(status);
        outcomes[rank].exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        outcomes[rank].signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
      }
    }
    if (remaining > 0 && seconds_since(start) > limit_s) {
      for (int rank = 0; rank < world; ++rank)
        if (!done[rank]) kill(pids[rank], SIGKILL);
      for (int rank = 0; rank < world; ++rank)
        if (!done[rank]) {
          waitpid(pids[rank], nullptr, 0);
          outcomes[rank].report = str("HUNG: killed after ", limit_s, " s");
        }
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  for (int rank = 0; rank < world; ++rank) {
    std::ifstream in(str(dir, "/rank", rank, ".txt"));
    if (in) outcomes[rank].report += std::string(std::istreambuf_iterator<char>(in), {});
  }
  return outcomes;
}

std::string describe(const std::vector<RankOutcome>& outcomes) {
  std::string text;
  for (size_t r = 0; r < outcomes.size(); ++r)
    text += str("rank ", r, ": exit ", outcomes[r].exit_code, " signal ", outcomes[r].signal,
                " report: ", outcomes[r].report, "\n");
  return text;
}

// ---------------------------------------------------------------------------------------------
// The deterministic workload and its one-process simulation

struct TableSpec {
  const char* name;
  int64_t rows, dim, hot;
};
// Three tables like the model's (embedding, softmax weight, bias) plus one whose tail is
// smaller than the world, so some ranks own nothing in it.
const std::vector<TableSpec> kTables = {
    {"embedding", 150, 8, 7}, {"softmax", 150, 5, 7}, {"bias", 150, 1, 7}, {"tiny", 10, 2, 8}};

struct Workload {
  int world = 2;
  int64_t first_step = 0;
  int steps = 6;
  bool prefetch = true;
  uint64_t seed = 1;
  bool sparse_empties = false;  // many empty id lists, one step with none at all
  bool sleepy = true;           // rank-dependent sleeps to vary the message orderings
};

float initial_value(int t, int64_t id, int64_t d) {
  return static_cast<float>((id * 31 + d * 7 + t * 13) % 97) / 97.0f - 0.5f;
}

// Sorted unique ids of table t that `rank` touches at `step`.
std::vector<int32_t> ids_for(const Workload& w, int rank, int64_t step, int t) {
  std::mt19937_64 rng(w.seed * 1000003 + rank * 7919 + static_cast<uint64_t>(step) * 131 + t);
  if (w.sparse_empties && (step == w.first_step + 2 || (rank + step + t) % 3 == 0)) return {};
  const int64_t rows = kTables[t].rows;
  const int count = static_cast<int>(rng() % (rows / 4 + 1));
  std::vector<int32_t> ids;
  for (int i = 0; i < count; ++i) ids.push_back(static_cast<int32_t>(rng() % rows));
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  return ids;
}

// Gradient element of rank `rank` for row `id` given the row value it sees.
float gradient(int rank, int64_t step, int t, int64_t id, int64_t d, float value) {
  const float noise =
      static_cast<float>(((rank + 1) * 1000003 + step * 7919 + id * 131 + d * 17 + t * 3) % 1000) /
          1000.0f -
      0.5f;
  return 0.5f * value + noise;
}

using Tables = std::vector<std::vector<float>>;  // [table] -> [rows * dim]

Tables initial_tables() {
  Tables tables;
  for (size_t t = 0; t < kTables.size(); ++t) {
    std::vector<float> values(kTables[t].rows * kTables[t].dim);
    for (int64_t id = 0; id < kTables[t].rows; ++id)
      for (int64_t d = 0; d < kTables[t].dim; ++d)
        values[id * kTables[t].dim + d] = initial_value(static_cast<int>(t), id, d);
    tables.push_back(std::move(values));
  }
  return tables;
}

// Gradient rows [ids.size(), dim] of `rank` at `step` computed from `values`.
std::vector<float> gradients(int rank, int64_t step, int t, const std::vector<int32_t>& ids,
                             const std::vector<float>& values) {
  const int64_t dim = kTables[t].dim;
  std::vector<float> rows(ids.size() * dim);
  for (size_t i = 0; i < ids.size(); ++i)
    for (int64_t d = 0; d < dim; ++d)
      rows[i * dim + d] = gradient(rank, step, t, ids[i], d, values[ids[i] * dim + d]);
  return rows;
}

// One step of the whole job in one process: per tail id the rank-order sum of the
// contributions (first copied, then added), then values -= 0.1 * sum. Returns the sums
// per table as id -> row.
std::vector<std::map<int32_t, std::vector<float>>> simulate_step(const Workload& w, int64_t step,
                                                                 Tables& values) {
  std::vector<std::map<int32_t, std::vector<float>>> sums(kTables.size());
  for (size_t t = 0; t < kTables.size(); ++t) {
    const int64_t dim = kTables[t].dim;
    for (int rank = 0; rank < w.world; ++rank) {
      const std::vector<int32_t> ids = ids_for(w, rank, step, static_cast<int>(t));
      const std::vector<float> grads = gradients(rank, step, static_cast<int>(t), ids, values[t]);
      for (size_t i = 0; i < ids.size(); ++i) {
        if (ids[i] < kTables[t].hot) continue;
        auto [it, fresh] = sums[t].try_emplace(ids[i]);
        if (fresh) {
          it->second.assign(grads.begin() + i * dim, grads.begin() + (i + 1) * dim);
        } else {
          for (int64_t d = 0; d < dim; ++d) it->second[d] += grads[i * dim + d];
        }
      }
    }
    for (const auto& [id, sum] : sums[t])
      for (int64_t d = 0; d < dim; ++d) values[t][id * dim + d] -= 0.1f * sum[d];
  }
  return sums;
}

bool same_bits(const float* a, const float* b, int64_t n) {
  return std::memcmp(a, b, n * sizeof(float)) == 0;
}

// One rank's run of the workload; returns "" or the first mismatch. Writes "ok ..." with its
// stats when everything matched.
std::string run_workload_rank(const Workload& w, int rank, const std::string& dir) {
  FolderKvStore store(dir);
  Tables mine = initial_tables();
  Tables expected = initial_tables();  // the simulation, advanced step by step
  std::vector<SparseTable> tables;
  for (size_t t = 0; t < kTables.size(); ++t)
    tables.push_back(
        {kTables[t].name, mine[t].data(), kTables[t].rows, kTables[t].dim, kTables[t].hot});
  SparseExchangeOptions options;
  options.timeout_s = 30;
  SparseExchange exchange(store, Topology{rank, w.world, rank, w.world, 0}, tables, options);
  const int num_tables = static_cast<int>(kTables.size());
  auto ids_of_step = [&](int64_t step) {
    std::vector<std::vector<int32_t>> ids;
    for (int t = 0; t < num_tables; ++t) ids.push_back(ids_for(w, rank, step, t));
    return ids;
  };
  const int64_t last = w.first_step + w.steps - 1;
  std::vector<SummedRows> sums;
  for (int64_t step = w.first_step; step <= last; ++step) {
    const std::vector<std::vector<int32_t>> ids = ids_of_step(step);
    if (step == w.first_step || !w.prefetch) exchange.request_rows(step, ids);
    exchange.wait_rows(step);
    // Every row this rank uses must now equal the simulation's value before this step.
    for (int t = 0; t < num_tables; ++t) {
      const int64_t dim = kTables[t].dim;
      for (const int32_t id : ids[t])
        if (!same_bits(&mine[t][id * dim], &expected[t][id * dim], dim))
          return str("step ", step, " table ", t, " row ", id, " (owner ", exchange.owner(t, id),
                     ") fetched ", mine[t][id * dim], " expected ", expected[t][id * dim]);
    }
    if (w.prefetch && step < last) exchange.request_rows(step + 1, ids_of_step(step + 1));
    if (w.sleepy && (step + rank) % 3 == 0)
      std::this_thread::sleep_for(std::chrono::milliseconds(2 * rank + 1));
    std::vector<std::vector<float>> grads;
    for (int t = 0; t < num_tables; ++t) grads.push_back(gradients(rank, step, t, ids[t], mine[t]));
    std::vector<std::pair<const std::vector<int32_t>*, const float*>> grads_per_table;
    for (int t = 0; t < num_tables; ++t) grads_per_table.push_back({&ids[t], grads[t].data()});
    // The reusing form, on every other step: the result's sizes change from step to step.
    if (step % 2 == 0)
      exchange.exchange_gradients(step, grads_per_table, sums);
    else
      sums = exchange.exchange_gradients(step, grads_per_table);
    const auto expected_sums = simulate_step(w, step, expected);
    for (int t = 0; t < num_tables; ++t) {
      const int64_t dim = kTables[t].dim;
      const TailShard owned = exchange.owned_rows(t);
      std::vector<int32_t> expected_ids;
      for (const auto& [id, sum] : expected_sums[t])
        if (owned.owns(id)) expected_ids.push_back(id);
      if (sums[t].ids != expected_ids)
        return str("step ", step, " table ", t, ": summed ", sums[t].ids.size(), " ids, expected ",
                   expected_ids.size());
      for (size_t i = 0; i < expected_ids.size(); ++i)
        if (!same_bits(&sums[t].values[i * dim], expected_sums[t].at(expected_ids[i]).data(), dim))
          return str("step ", step, " table ", t, " sum of row ", expected_ids[i], " differs");
    }
    // The update window: write the owned rows (slowly on some ranks and steps, so fetch
    // requests arrive in the middle of it and are deferred).
    if (w.sleepy && (step + rank) % 2 == 0)
      std::this_thread::sleep_for(std::chrono::milliseconds(3));
    for (int t = 0; t < num_tables; ++t) {
      const int64_t dim = kTables[t].dim;
      for (size_t i = 0; i < sums[t].ids.size(); ++i)
        for (int64_t d = 0; d < dim; ++d)
          mine[t][sums[t].ids[i] * dim + d] -= 0.1f * sums[t].values[i * dim + d];
    }
    exchange.rows_updated(step);
  }
  for (int t = 0; t < num_tables; ++t) {
    const TailShard owned = exchange.owned_rows(t);
    const int64_t dim = kTables[t].dim;
    for (int64_t i = 0; i < owned.count(); ++i) {
      const int64_t id = owned.id(i);
      if (!same_bits(&mine[t][id * dim], &expected[t][id * dim], dim))
        return str("after the last step, owned row ", id, " of table ", t, " differs");
    }
  }
  exchange.close();
  const SparseExchangeStats& stats = exchange.stats();
  return str("ok steps=", stats.steps, " fetched=", stats.rows_fetched,
             " refreshed=", stats.rows_refreshed, " deferred=", stats.requests_deferred,
             " pushed=", stats.rows_pushed, " received=", stats.rows_received);
}

int64_t stat_of(const std::string& report, const std::string& name) {
  const size_t at = report.find(" " + name + "=");
  return at == std::string::npos ? -1 : std::stoll(report.substr(at + name.size() + 2));
}

void expect_all_ok(const std::vector<RankOutcome>& outcomes) {
  for (size_t r = 0; r < outcomes.size(); ++r)
    EXPECT_TRUE(outcomes[r].exited && outcomes[r].exit_code == 0) << describe(outcomes);
}

int64_t total(const std::vector<RankOutcome>& outcomes, const std::string& name) {
  int64_t sum = 0;
  for (const auto& outcome : outcomes) sum += std::max<int64_t>(0, stat_of(outcome.report, name));
  return sum;
}

void run_workload_test(const Workload& w) {
  const std::string dir = testing::temp_dir("sparse_exchange");
  const auto start = Clock::now();
  const auto outcomes =
      run_ranks(w.world, dir, [&](int rank) { return run_workload_rank(w, rank, dir); });
  expect_all_ok(outcomes);
  EXPECT_GT(total(outcomes, "fetched"), 0) << describe(outcomes);
  EXPECT_GT(total(outcomes, "received"), 0) << describe(outcomes);
  for (const auto& outcome : outcomes) EXPECT_EQ(stat_of(outcome.report, "steps"), w.steps);
  std::printf("world %d, %d steps, prefetch %d: %.2f s\n%s", w.world, w.steps, w.prefetch,
              seconds_since(start), describe(outcomes).c_str());
}

TEST(SparseExchangeDist, TwoRanksWithPrefetchMatchTheSimulationBitwise) {
  Workload w;
  w.world = 2;
  w.first_step = 1000;  // a resumed run starts anywhere
  run_workload_test(w);
}

TEST(SparseExchangeDist, DefaultsToTcpOverLoopbackWhenUcxTlsIsUnset) {
  Workload w;
  w.world = 2;
  w.steps = 3;
  w.seed = 6;
  const std::string dir = testing::temp_dir("sparse_exchange");
  const auto outcomes = run_ranks(w.world, dir, [&](int rank) {
    unsetenv("UCX_TLS");  // this child only: the library picks tcp over lo itself
    unsetenv("UCX_NET_DEVICES");
    return run_workload_rank(w, rank, dir);
  });
  expect_all_ok(outcomes);
}

TEST(SparseExchangeDist, FourRanksWithPrefetchRefreshRowsUpdatedAfterTheirFetch) {
  Workload w;
  w.world = 4;
  w.steps = 8;
  w.seed = 2;
  const std::string dir = testing::temp_dir("sparse_exchange");
  const auto outcomes =
      run_ranks(w.world, dir, [&](int rank) { return run_workload_rank(w, rank, dir); });
  expect_all_ok(outcomes);
  // Prefetches reach owners before their update: the completion messages must refresh rows.
  EXPECT_GT(total(outcomes, "refreshed"), 0) << describe(outcomes);
}

TEST(SparseExchangeDist, TwoRanksWithoutPrefetchMatchTheSimulationBitwise) {
  Workload w;
  w.world = 2;
  w.prefetch = false;
  w.seed = 3;
  run_workload_test(w);
}

TEST(SparseExchangeDist, FourRanksWithoutPrefetchDeferRequestsDuringUpdates) {
  Workload w;
  w.world = 4;
  w.steps = 8;
  w.prefetch = false;
  w.seed = 4;
  const std::string dir = testing::temp_dir("sparse_exchange");
  const auto outcomes =
      run_ranks(w.world, dir, [&](int rank) { return run_workload_rank(w, rank, dir); });
  expect_all_ok(outcomes);
  // Requests sent right after a fast rank's update reach slow owners inside their update
  // window (they sleep there): those are deferred and answered after the update.
  EXPECT_GT(total(outcomes, "deferred"), 0) << describe(outcomes);
}

TEST(SparseExchangeDist, EmptyIdListsAndRanksOwningNothing) {
  Workload w;
  w.world = 3;
  w.steps = 6;
  w.seed = 5;
  w.sparse_empties = true;
  run_workload_test(w);
  w.prefetch = false;
  w.sleepy = false;
  run_workload_test(w);
}

TEST(SparseExchangeDist, KilledPeerMakesEveryOtherRankThrowPeerLostQuickly) {
  const std::string dir = testing::temp_dir("sparse_exchange");
  const int world = 3, victim = 2;
  const auto outcomes = run_ranks(world, dir, [&](int rank) -> std::string {
    FolderKvStore store(dir);
    Tables mine = initial_tables();
    std::vector<SparseTable> tables;
    for (size_t t = 0; t < kTables.size(); ++t)
      tables.push_back(
          {kTables[t].name, mine[t].data(), kTables[t].rows, kTables[t].dim, kTables[t].hot});
    SparseExchangeOptions options;
    options.timeout_s = 30;  // a loss must be reported long before a timeout
    SparseExchange exchange(store, Topology{rank, world, rank, world, 0}, tables, options);
    Workload w;
    w.world = world;
    std::vector<std::vector<int32_t>> ids(kTables.size());
    for (int64_t step = 0; step < 5; ++step) {
      for (size_t t = 0; t < kTables.size(); ++t)
        ids[t] = ids_for(w, rank, step, static_cast<int>(t));
      const auto call_start = Clock::now();
      try {
        exchange.request_rows(step, ids);
        exchange.wait_rows(step);
        if (rank == victim && step == 2) kill(getpid(), SIGKILL);
        std::vector<std::vector<float>> grads;
        std::vector<std::pair<const std::vector<int32_t>*, const float*>> grads_per_table;
        for (size_t t = 0; t < kTables.size(); ++t)
          grads.push_back(gradients(rank, step, static_cast<int>(t), ids[t], mine[t]));
        for (size_t t = 0; t < kTables.size(); ++t)
          grads_per_table.push_back({&ids[t], grads[t].data()});
        exchange.exchange_gradients(step, grads_per_table);
        exchange.rows_updated(step);
      } catch (const PeerLost& lost) {
        const double waited = seconds_since(call_start);
        const std::string message = lost.what();
        if (lost.rank() != victim) return str("PeerLost names rank ", lost.rank(), ": ", message);
        if (message.find(str("rank ", victim, " was lost: UCX reported")) == std::string::npos)
          return str("unclear PeerLost message: ", message);
        if (waited > 10) return str("PeerLost after ", waited, " s: ", message);
        if (step != 2) return str("PeerLost at step ", step, ": ", message);
        // Every later call throws it too, close() included.
        try {
          exchange.close();
          return "close() after a lost peer did not throw";
        } catch (const PeerLost& again) {
          if (again.rank() != victim) return str("close() names rank ", again.rank());
        }
        return str("ok lost after ", waited, " s: ", message);
      }
    }
    return "no PeerLost although rank 2 was killed";
  });
  EXPECT_EQ(outcomes[victim].signal, SIGKILL) << describe(outcomes);
  for (int rank = 0; rank < world; ++rank) {
    if (rank != victim) {
      EXPECT_TRUE(outcomes[rank].exited && outcomes[rank].exit_code == 0) << describe(outcomes);
    }
  }
  std::printf("%s", describe(outcomes).c_str());
}

TEST(SparseExchangeDist, SilentPeerTimesOutNamingItAndTheStep) {
  const std::string dir = testing::temp_dir("sparse_exchange");
  const int world = 3, silent = 2;
  const auto outcomes = run_ranks(world, dir, [&](int rank) -> std::string {
    FolderKvStore store(dir);
    Tables mine = initial_tables();
    std::vector<SparseTable> tables;
    for (size_t t = 0; t < kTables.size(); ++t)
      tables.push_back(
          {kTables[t].name, mine[t].data(), kTables[t].rows, kTables[t].dim, kTables[t].hot});
    SparseExchangeOptions options;
    options.timeout_s = 2;
    SparseExchange exchange(store, Topology{rank, world, rank, world, 0}, tables, options);
    const std::vector<std::vector<int32_t>> none(kTables.size());
    exchange.request_rows(4, none);
    exchange.wait_rows(4);
    if (rank == silent) {
      // Alive (its comm thread still answers) but never sends its gradients.
      std::this_thread::sleep_for(std::chrono::seconds(5));
      return "ok silent";
    }
    std::vector<std::pair<const std::vector<int32_t>*, const float*>> grads;
    for (const auto& list : none) grads.push_back({&list, nullptr});
    const auto start = Clock::now();
    try {
      exchange.exchange_gradients(4, grads);
      return "exchange_gradients returned without rank 2's gradients";
    } catch (const PeerLost& lost) {
      return str("PeerLost instead of a timeout: ", lost.what());
    } catch (const CommError& error) {
      const std::string message = error.what();
      const double waited = seconds_since(start);
      // Stay connected a little: leaving now would make the other waiting rank see this one
      // as lost before its own timeout fires (correct, but not what this test checks).
      std::this_thread::sleep_for(std::chrono::milliseconds(1500));
      if (message.find("exchange_gradients at step 4 timed out after 2 s waiting for gradients "
                       "from rank 2;") == std::string::npos)
        return str("unclear timeout message: ", message);
      if (waited < 1.9 || waited > 4.5) return str("timed out after ", waited, " s");
      return str("ok ", message);
    }
  });
  for (int rank = 0; rank < world; ++rank)
    EXPECT_TRUE(outcomes[rank].exited && outcomes[rank].exit_code == 0) << describe(outcomes);
  std::printf("%s", describe(outcomes).c_str());
}

TEST(SparseExchangeDist, MismatchedTablesAreRefusedByEveryRank) {
  const std::string dir = testing::temp_dir("sparse_exchange");
  const auto outcomes = run_ranks(2, dir, [&](int rank) -> std::string {
    FolderKvStore store(dir);
    std::vector<float> values(100 * 5);
    const int64_t dim = rank == 0 ? 5 : 4;
    try {
      SparseExchange exchange(store, Topology{rank, 2, rank, 2, 0},
                              {{"softmax", values.data(), 100, dim, 10}});
      return "constructor accepted different dims";
    } catch (const CommError& error) {
      const std::string message = error.what();
      if (message.find(str("rank ", 1 - rank, " passed different sparse tables")) ==
              std::string::npos ||
          message.find("dim=5") == std::string::npos || message.find("dim=4") == std::string::npos)
        return str("unclear message: ", message);
      return str("ok ", message);
    }
  });
  expect_all_ok(outcomes);
  std::printf("%s", describe(outcomes).c_str());
}

}  // namespace
}  // namespace elmo
