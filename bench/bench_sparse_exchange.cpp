// bench_sparse_exchange: throughput of comm/sparse_exchange (row fetch and gradient push) with
// 2 and 4 local ranks over loopback TCP UCX, beside ucx_perftest's raw bandwidth on the same
// transport, measured in the same invocation. What it is not: a model of a real training step
// (no compute, no prefetch overlap); it gives the cost per byte to plug into one.
//
// Every case forks `ranks` processes. Per step each rank asks every peer for `rows` distinct
// random rows of its shard (dim floats each), checks them against the known table contents,
// then pushes one gradient row per fetched id (all elements = rank + 1, so every rank-order sum
// is exact) and checks the sums it owns. Times are per step, the slowest rank's, median over
// the measured steps. Rates count the rows / payload bytes moved by all ranks together.
//
//   bench_sparse_exchange [--ranks 2,4] [--rows 1024,8192,32768] [--dim 512] [--steps N]
//                         [--json out.json] [--no-perftest]
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "comm/sparse_exchange.h"

namespace elmo {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using nlohmann::json;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// A cross-process KvStore for local ranks: one file per key, written to a temporary name and
// renamed; get() polls.
class FolderKvStore : public KvStore {
 public:
  explicit FolderKvStore(std::string dir) : dir_(std::move(dir)) {}
  void set(const std::string& key, const std::string& value) override {
    const std::string path = file_of(key), temporary = str(path, ".tmp.", getpid());
    std::ofstream(temporary, std::ios::binary) << value;
    fs::rename(temporary, path);
  }
  std::string get(const std::string& key, double timeout_s) override {
    const auto start = Clock::now();
    while (!fs::exists(file_of(key))) {
      if (seconds_since(start) > (timeout_s < 0 ? 60.0 : timeout_s))
        throw CommError(str("bench store: key '", key, "' not set within ", timeout_s, " s"));
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    std::ifstream in(file_of(key), std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

 private:
  std::string file_of(std::string key) const {
    std::replace(key.begin(), key.end(), '/', '_');
    return dir_ + "/" + key;
  }
  std::string dir_;
};

struct Case {
  int ranks = 2;
  int64_t rows = 1024;  // rows per step per peer
  int64_t dim = 512;
  int steps = 5;  // measured steps (after one warm-up step)
};

float table_value(int64_t id, int64_t d) {
  return static_cast<float>(id % 4096) + static_cast<float>(d % 1024) / 1024.0f;  // exact
}

// Ids `rank` fetches from `owner` at `step`: `rows` distinct ids of the owner's shard, sorted.
std::vector<int32_t> ids_from(const Case& c, int rank, int owner, int step,
                              const TailShard& shard) {
  std::mt19937_64 rng(1000003ull * rank + 7919ull * owner + 131ull * step + 17);
  std::vector<int32_t> all(shard.count());
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<int32_t>(shard.id(i));
  for (int64_t i = 0; i < c.rows; ++i)  // partial Fisher-Yates
    std::swap(all[i], all[i + rng() % (all.size() - i)]);
  all.resize(c.rows);
  std::sort(all.begin(), all.end());
  return all;
}

// One rank of a case; writes its per-step times and counters as JSON to `out`.
void run_rank(const Case& c, int rank, const std::string& dir, const std::string& out) {
  FolderKvStore store(dir);
  const int64_t shard_rows = c.rows + c.rows / 4;
  const int64_t table_rows = shard_rows * c.ranks;
  std::vector<float> values(table_rows * c.dim);
  for (int64_t id = 0; id < table_rows; ++id)
    for (int64_t d = 0; d < c.dim; ++d) values[id * c.dim + d] = table_value(id, d);
  SparseExchange exchange(store, Topology{rank, c.ranks, rank, c.ranks, 0},
                          {{"softmax.weight", values.data(), table_rows, c.dim, 0}});
  std::vector<TailShard> shards;
  for (int r = 0; r < c.ranks; ++r) shards.push_back(tail_shard(table_rows, 0, r, c.ranks));
  json record = {{"rank", rank}, {"fetch_s", json::array()}, {"push_s", json::array()}};
  int64_t wrong_rows = 0, wrong_sums = 0;
  std::vector<SummedRows> sums;  // reused from step to step, as a trainer would
  for (int step = 0; step <= c.steps; ++step) {
    std::vector<int32_t> ids;
    for (int owner = 0; owner < c.ranks; ++owner) {
      if (owner == rank) continue;
      const std::vector<int32_t> part = ids_from(c, rank, owner, step, shards[owner]);
      ids.insert(ids.end(), part.begin(), part.end());
    }
    std::sort(ids.begin(), ids.end());  // the owners' ids interleave
    const auto fetch_start = Clock::now();
    exchange.request_rows(step, {ids});
    exchange.wait_rows(step);
    const double fetch_s = seconds_since(fetch_start);
    for (const int32_t id : ids)
      for (int64_t d = 0; d < c.dim; ++d)
        if (values[id * c.dim + d] != table_value(id, d)) {
          ++wrong_rows;
          break;
        }
    const std::vector<float> grads(ids.size() * c.dim, static_cast<float>(rank + 1));
    const auto push_start = Clock::now();
    exchange.exchange_gradients(step, {{&ids, grads.data()}}, sums);
    const double push_s = seconds_since(push_start);
    std::map<int32_t, float> expected;  // owned id -> sum of (r + 1) over ranks that sent it
    for (int r = 0; r < c.ranks; ++r)
      if (r != rank)
        for (const int32_t id : ids_from(c, r, rank, step, shards[rank]))
          expected[id] += static_cast<float>(r + 1);
    if (sums[0].ids.size() != expected.size()) wrong_sums += 1;
    size_t i = 0;
    for (const auto& [id, sum] : expected) {
      if (i >= sums[0].ids.size()) break;
      bool good = sums[0].ids[i] == id;
      for (int64_t d = 0; d < c.dim && good; ++d) good = sums[0].values[i * c.dim + d] == sum;
      wrong_sums += good ? 0 : 1;
      ++i;
    }
    exchange.rows_updated(step);  // no update: the table keeps its known contents
    if (step > 0) {               // step 0 warms up connections and buffers
      record["fetch_s"].push_back(fetch_s);
      record["push_s"].push_back(push_s);
    }
  }
  exchange.close();
  const SparseExchangeStats& s = exchange.stats();
  record["wrong"] = wrong_rows + wrong_sums;
  record["steps"] = s.steps;
  record["rows_fetched"] = s.rows_fetched;
  record["bytes_fetched"] = s.bytes_fetched;
  record["bytes_requested"] = s.bytes_requested;
  record["rows_refreshed"] = s.rows_refreshed;
  record["bytes_refreshed"] = s.bytes_refreshed;
  record["rows_pushed"] = s.rows_pushed;
  record["bytes_pushed"] = s.bytes_pushed;
  record["wait_rows_s"] = s.wait_rows_s;
  record["apply_rows_s"] = s.apply_rows_s;
  record["exchange_wait_s"] = s.exchange_wait_s;
  record["exchange_sum_s"] = s.exchange_sum_s;
  std::ofstream(out) << record.dump();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

// Forks the ranks of one case and summarises them; returns the JSON row.
json run_case(const Case& c) {
  const std::string dir =
      (fs::temp_directory_path() / str("elmo_bench_sx_", getpid(), "_", c.ranks, "_", c.rows))
          .string();
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::vector<pid_t> pids;
  for (int rank = 0; rank < c.ranks; ++rank) {
    const pid_t pid = fork();
    if (pid == 0) {
      int code = 0;
      try {
        run_rank(c, rank, dir, str(dir, "/result", rank, ".json"));
      } catch (const std::exception& e) {
        std::fprintf(stderr, "rank %d: %s\n", rank, e.what());
        code = 1;
      }
      _exit(code);
    }
    pids.push_back(pid);
  }
  bool failed = false;
  for (const pid_t pid : pids) {
    int status = 0;
    waitpid(pid, &status, 0);
    failed |= !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  if (failed) throw Error(str("a rank of the case ranks=", c.ranks, " rows=", c.rows, " failed"));
  std::vector<json> results;
  for (int rank = 0; rank < c.ranks; ++rank) {
    std::ifstream in(str(dir, "/result", rank, ".json"));
    results.push_back(json::parse(in));
  }
  fs::remove_all(dir);

  std::vector<double> fetch, push;  // per step: slowest rank
  for (int step = 0; step < c.steps; ++step) {
    double f = 0, p = 0;
    for (const auto& r : results) {
      f = std::max(f, r["fetch_s"][step].get<double>());
      p = std::max(p, r["push_s"][step].get<double>());
    }
    fetch.push_back(f);
    push.push_back(p);
  }
  auto per_step = [&](const char* key) {  // all ranks, per step
    int64_t sum = 0;
    for (const auto& r : results) sum += r[key].get<int64_t>();
    return static_cast<double>(sum) / (c.steps + 1);
  };
  auto per_step_mean = [&](const char* key) {
    double sum = 0;
    for (const auto& r : results) sum += r[key].get<double>();
    return sum / (c.steps + 1) / c.ranks;
  };
  int64_t wrong = 0;
  for (const auto& r : results) wrong += r["wrong"].get<int64_t>();
  const double fetch_s = median(fetch), push_s = median(push);
  const double rows_fetched = per_step("rows_fetched"), rows_pushed = per_step("rows_pushed");
  const double bytes_fetched = per_step("bytes_fetched") + per_step("bytes_requested");
  const double bytes_pushed = per_step("bytes_pushed");
  const double bytes_refreshed = per_step("bytes_refreshed");
  return {
      {"ranks", c.ranks},
      {"rows_per_peer", c.rows},
      {"dim", c.dim},
      {"steps", c.steps},
      {"fetch_rows_per_step", rows_fetched},
      {"fetch_bytes_per_step", bytes_fetched},
      {"fetch_s", fetch_s},
      {"fetch_rows_per_s", rows_fetched / fetch_s},
      {"fetch_gb_per_s", bytes_fetched / fetch_s / 1e9},
      {"push_rows_per_step", rows_pushed},
      {"push_bytes_per_step", bytes_pushed},
      {"push_s", push_s},
      {"push_rows_per_s", rows_pushed / push_s},
      {"push_gb_per_s", bytes_pushed / push_s / 1e9},
      {"refresh_bytes_per_step", bytes_refreshed},
      {"bytes_per_step", bytes_fetched + bytes_pushed + bytes_refreshed},
      {"wrong", wrong},
      // Mean seconds per step and rank in each phase (SparseExchangeStats), warm-up included.
      {"phase_s",
       {{"wait_rows", per_step_mean("wait_rows_s")},
        {"apply_rows", per_step_mean("apply_rows_s")},
        {"exchange_wait", per_step_mean("exchange_wait_s")},
        {"exchange_sum", per_step_mean("exchange_sum_s")}}},
  };
}

// Runs ucx_perftest (server + client on loopback) and returns its bandwidth in GB/s, or a
// negative number with `note` saying why not.
double run_perftest(const std::string& test, int64_t size, int iterations, int port,
                    std::string* note) {
  const char* binary = "/usr/bin/ucx_perftest";
  if (access(binary, X_OK) != 0) {
    *note = "ucx_perftest not found (Debian package ucx-utils); skipped";
    return -1;
  }
  const std::string env = "UCX_TLS=tcp UCX_NET_DEVICES=lo";
  const std::string server = str(env, " ", binary, " -p ", port, " >/dev/null 2>&1 &");
  if (std::system(server.c_str()) != 0) {
    *note = "could not start the ucx_perftest server";
    return -1;
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const std::string client =
      str(env, " ", binary, " 127.0.0.1 -p ", port, " -t ", test, " -s ", size, " -n ", iterations,
          " -w ", std::max(1, iterations / 10), " -f -v 2>&1");
  FILE* pipe = popen(client.c_str(), "r");
  std::string output;
  char buffer[4096];
  while (pipe && std::fgets(buffer, sizeof buffer, pipe)) output += buffer;
  if (pipe) pclose(pipe);
  // CSV: iterations,50.0_percentile_lat,avg_lat,overall_lat,avg_bw,overall_bw,avg_mr,overall_mr
  std::istringstream lines(output);
  for (std::string line; std::getline(lines, line);) {
    std::vector<std::string> fields;
    std::stringstream ss(line);
    for (std::string field; std::getline(ss, field, ',');) fields.push_back(field);
    if (fields.size() >= 6 && std::isdigit(static_cast<unsigned char>(fields[0].back())) &&
        fields[0].find_first_not_of(" 0123456789") == std::string::npos) {
      return std::stod(fields[5]) * 1048576.0 / 1e9;  // perftest reports MB/s = 2^20 B/s
    }
  }
  *note = "could not parse ucx_perftest output: " + output.substr(0, 300);
  return -1;
}

int run(int argc, char** argv) {
  CLI::App app{"SparseExchange fetch/push throughput over loopback TCP UCX, beside ucx_perftest"};
  std::vector<int> ranks = {2, 4};
  std::vector<int64_t> rows = {1024, 8192, 32768};
  int64_t dim = 512;
  int steps = 0;
  std::string json_path;
  bool no_perftest = false;
  app.add_option("--ranks", ranks, "local ranks per case")->delimiter(',');
  app.add_option("--rows", rows, "rows per step per peer")->delimiter(',');
  app.add_option("--dim", dim, "floats per row");
  app.add_option("--steps", steps, "measured steps per case (0: by size)");
  app.add_option("--json", json_path, "write the results here");
  app.add_flag("--no-perftest", no_perftest, "skip the ucx_perftest reference");
  CLI11_PARSE(app, argc, argv);
  // Ranks run on this host: tcp over lo unless the caller chose otherwise.
  setenv("UCX_TLS", "tcp", 0);
  setenv("UCX_NET_DEVICES", "lo", 0);

  const auto start = Clock::now();
  json cases = json::array();
  std::printf("SparseExchange over UCX (UCX_TLS=%s UCX_NET_DEVICES=%s), dim %lld, f32 rows\n",
              std::getenv("UCX_TLS"), std::getenv("UCX_NET_DEVICES"), static_cast<long long>(dim));
  std::printf("%5s %8s | %9s %9s %8s %9s %7s | %9s %8s %9s %7s | %9s %6s\n", "ranks", "rows/pr",
              "fetch_row", "fetch_MB", "fetch_ms", "Mrows/s", "GB/s", "push_MB", "push_ms",
              "Mrows/s", "GB/s", "MB/step", "#wrong");
  int64_t total_wrong = 0;
  for (const int r : ranks) {
    for (const int64_t n : rows) {
      Case c{r, n, dim, steps};
      const double bytes_per_rank = (r - 1) * n * (4.0 * dim + 4) * 2;
      if (c.steps <= 0) c.steps = std::clamp(static_cast<int>(4e8 / (bytes_per_rank * r)), 3, 20);
      const json row = run_case(c);
      total_wrong += row["wrong"].get<int64_t>();
      std::printf(
          "%5d %8lld | %9.0f %9.1f %8.2f %9.3f %7.3f | %9.1f %8.2f %9.3f %7.3f | %9.1f %6lld\n", r,
          static_cast<long long>(n), row["fetch_rows_per_step"].get<double>(),
          row["fetch_bytes_per_step"].get<double>() / 1e6, row["fetch_s"].get<double>() * 1e3,
          row["fetch_rows_per_s"].get<double>() / 1e6, row["fetch_gb_per_s"].get<double>(),
          row["push_bytes_per_step"].get<double>() / 1e6, row["push_s"].get<double>() * 1e3,
          row["push_rows_per_s"].get<double>() / 1e6, row["push_gb_per_s"].get<double>(),
          row["bytes_per_step"].get<double>() / 1e6,
          static_cast<long long>(row["wrong"].get<int64_t>()));
      std::fflush(stdout);
      cases.push_back(row);
    }
  }
  std::printf(
      "(rows and bytes per step are all ranks together; rates are over the slowest "
      "rank's median step; bytes = payload: ids + values)\n");

  json reference = json::array();
  if (!no_perftest) {
    std::printf("\nucx_perftest on the same transport (one process pair, one direction):\n");
    struct Run {
      const char* test;
      int64_t size;
      int iterations;
    };
    const int port_base = 20000 + getpid() % 20000;
    int port = port_base;
    for (const Run run : {Run{"tag_bw", 4096, 20000}, Run{"ucp_am_bw", 1 << 20, 400},
                          Run{"ucp_am_bw", 16 << 20, 40}, Run{"ucp_put_bw", 1 << 20, 400}}) {
      std::string note;
      const double gbps = run_perftest(run.test, run.size, run.iterations, port++, &note);
      if (gbps < 0) {
        std::printf("  %-10s %9lld B: %s\n", run.test, static_cast<long long>(run.size),
                    note.c_str());
        if (note.find("not found") != std::string::npos) break;
        continue;
      }
      std::printf("  %-10s %9lld B: %7.3f GB/s\n", run.test, static_cast<long long>(run.size),
                  gbps);
      reference.push_back({{"test", run.test}, {"size", run.size}, {"gb_per_s", gbps}});
    }
  }
  std::printf("\ntotal %.1f s\n", seconds_since(start));
  if (!json_path.empty()) {
    json out = {{"benchmark", "sparse_exchange"},
                {"transport", str("UCX_TLS=", std::getenv("UCX_TLS"),
                                  " UCX_NET_DEVICES=", std::getenv("UCX_NET_DEVICES"))},
                {"bytes_per_row", 4 * dim + 4},
                {"cases", cases},
                {"ucx_perftest", reference}};
    std::ofstream(json_path) << out.dump(2) << "\n";
    std::printf("wrote %s\n", json_path.c_str());
  }
  return total_wrong == 0 ? 0 : 1;
}

}  // namespace
}  // namespace elmo

int main(int argc, char** argv) {
  try {
    return elmo::run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_sparse_exchange: %s\n", e.what());
    return 1;
  }
}
