// bench_allreduce: Gloo all-reduce (comm/dense_allreduce.h) over loopback TCP with N local rank
// processes, for N in --ranks and buffer sizes --min_bytes..--max_bytes (x4 steps).
//
// Per case: time per call (the slowest rank's mean), algorithm bandwidth (bytes / time), bus
// bandwidth (algbw x 2(N-1)/N, the bytes each rank's link carries in a ring), and the number of
// wrong values in a separate checked call whose inputs are small integers (exact whatever the
// reduction order). The reference, measured in the same invocation, is raw loopback TCP: one
// stream of --reference_mb MB through a socket pair of threads; ratio = busbw / that bandwidth.
// Prints one row per case and writes JSON (--json). Exit code 1 when any value is wrong.
//
//   ./build/bench/bench_allreduce [--ranks 2,4] [--max_bytes 67108864] [--json PATH]
//
// What it is not: an NCCL benchmark (that needs GPUs; see tests/comm/test_nccl_gpu.cpp).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "comm/dense_allreduce.h"
#include "comm/rendezvous.h"
#include "runtime/log.h"

namespace elmo {
namespace {

using Clock = std::chrono::steady_clock;
constexpr const char* kToken = "bench-allreduce";

struct Options {
  std::vector<int> ranks = {2, 4};
  int64_t min_bytes = 4 << 10;
  int64_t max_bytes = 64 << 20;
  double seconds_per_case = 0.3;  // timed calls per case: about this long, 3..50 calls
  int reference_mb = 256;
  double timeout_s = 60;
  std::string json = "bench/results/allreduce.json";
};

std::vector<int64_t> sizes_of(const Options& o) {
  std::vector<int64_t> sizes;
  for (int64_t b = o.min_bytes; b <= o.max_bytes; b *= 4) sizes.push_back(b);
  return sizes;
}

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

float crafted(int64_t i, int rank) { return static_cast<float>((i * 7 + rank * 3) % 17 - 8); }

// One rank process: every case, results into the store under "result/<bytes>/<rank>".
void run_rank(const Options& o, int rank, int world, int port) {
  KvClientOptions co;
  co.port = port;
  co.token = kToken;
  co.rank = rank;
  co.timeout_s = o.timeout_s;
  co.connect_timeout_s = o.timeout_s;
  KvClient client(co);
  const Topology topology{rank, world, rank, world, 0};
  auto allreduce = make_gloo_allreduce(client, topology, "127.0.0.1", o.timeout_s);
  for (int64_t bytes : sizes_of(o)) {
    const int64_t count = bytes / static_cast<int64_t>(sizeof(float));
    std::vector<float> data(count);
    for (int64_t i = 0; i < count; ++i) data[i] = crafted(i, rank);
    allreduce->sum(data.data(), count);  // checked call (also the warm-up)
    int64_t wrong = 0;
    for (int64_t i = 0; i < count; ++i) {
      float expected = 0;
      for (int r = 0; r < world; ++r) expected += crafted(i, r);
      wrong += data[i] != expected;
    }
    // Timed calls on zeros (the cost does not depend on the values). Rank 0 decides the count
    // from one probe call so that every rank makes the same number of calls.
    std::fill(data.begin(), data.end(), 0.f);
    allreduce->barrier();
    auto start = Clock::now();
    allreduce->sum(data.data(), count);
    const double probe = seconds_since(start);
    const std::string iters_key = "iters/" + std::to_string(bytes);
    if (rank == 0)
      client.set(iters_key,
                 std::to_string(std::clamp(
                     static_cast<int>(o.seconds_per_case / std::max(probe, 1e-6)), 3, 50)));
    const int iters = std::stoi(client.get(iters_key));
    allreduce->barrier();
    start = Clock::now();
    for (int i = 0; i < iters; ++i) allreduce->sum(data.data(), count);
    const double per_call = seconds_since(start) / iters;
    client.set("result/" + std::to_string(bytes) + "/" + std::to_string(rank),
               str(per_call, " ", wrong, " ", iters));
  }
  client.barrier("done", world);
  client.leave();
}

struct Row {
  int ranks = 0;
  int64_t bytes = 0;
  double seconds = 0;
  int iters = 0;
  int64_t wrong = 0;
};

// Forks the ranks (before any thread exists in this process), serves their store, collects.
std::vector<Row> run_world(const Options& o, int world) {
  std::vector<pid_t> pids;
  std::vector<int> port_pipes;
  for (int r = 0; r < world; ++r) {
    int fds[2];
    if (::pipe(fds) != 0) throw Error("pipe failed");
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::close(fds[1]);
      int port = 0;
      pollfd p{fds[0], POLLIN, 0};
      int code = 1;
      if (::poll(&p, 1, 30000) == 1 && ::read(fds[0], &port, sizeof port) == sizeof port) {
        try {
          run_rank(o, r, world, port);
          code = 0;
        } catch (const std::exception& e) {
          std::fprintf(stderr, "rank %d of %d: %s\n", r, world, e.what());
        }
      }
      std::fflush(stderr);
      ::_exit(code);
    }
    ::close(fds[0]);
    pids.push_back(pid);
    port_pipes.push_back(fds[1]);
  }
  std::vector<Row> rows;
  {
    KvServer server("127.0.0.1", 0, kToken);
    const int port = server.port();
    for (int fd : port_pipes) {
      (void)!::write(fd, &port, sizeof port);
      ::close(fd);
    }
    bool failed = false;
    for (pid_t pid : pids) {
      int status = 0;
      ::waitpid(pid, &status, 0);
      failed |= !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    if (failed) throw Error(str("a rank of the ", world, "-rank run failed (see above)"));
    for (int64_t bytes : sizes_of(o)) {
      Row row{world, bytes, 0, 0, 0};
      for (int r = 0; r < world; ++r) {
        std::istringstream in(
            server.get("result/" + std::to_string(bytes) + "/" + std::to_string(r), 1));
        double seconds = 0;
        int64_t wrong = 0;
        in >> seconds >> wrong >> row.iters;
        row.seconds = std::max(row.seconds, seconds);
        row.wrong += wrong;
      }
      rows.push_back(row);
    }
  }
  return rows;
}

// Raw loopback TCP bandwidth in GB/s: one thread writes `megabytes` MB, another reads them.
double loopback_tcp_gbps(int megabytes) {
  const int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  if (::bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      ::listen(listener, 1) != 0 ||
      ::getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length) != 0)
    throw Error("reference: cannot open a loopback socket");
  const int64_t total = int64_t{megabytes} << 20;
  std::thread writer([&] {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) return;
    std::vector<char> chunk(1 << 20, 1);
    for (int64_t sent = 0; sent < total;) {
      const ssize_t n =
          ::send(fd, chunk.data(),
                 static_cast<size_t>(std::min<int64_t>(chunk.size(), total - sent)), MSG_NOSIGNAL);
      if (n <= 0) break;
      sent += n;
    }
    ::close(fd);
  });
  const int fd = ::accept(listener, nullptr, nullptr);
  std::vector<char> buffer(1 << 20);
  const auto start = Clock::now();
  int64_t received = 0;
  while (received < total) {
    const ssize_t n = ::recv(fd, buffer.data(), buffer.size(), 0);
    if (n <= 0) break;
    received += n;
  }
  const double seconds = seconds_since(start);
  writer.join();
  ::close(fd);
  ::close(listener);
  return static_cast<double>(received) / seconds / 1e9;
}

std::string load_average() {
  std::ifstream in("/proc/loadavg");
  std::string one, five, fifteen;
  in >> one >> five >> fifteen;
  return one + " " + five + " " + fifteen;
}

std::string human_bytes(int64_t bytes) {
  if (bytes >= (1 << 20)) return std::to_string(bytes >> 20) + " MB";
  return std::to_string(bytes >> 10) + " KB";
}

int run(const Options& o) {
  const std::string load_before = load_average();
  const auto start = Clock::now();
  std::vector<Row> rows;
  for (int world : o.ranks) {
    std::vector<Row> part = run_world(o, world);
    rows.insert(rows.end(), part.begin(), part.end());
  }
  const double reference = loopback_tcp_gbps(o.reference_mb);  // threads: after every fork
  const std::string load_after = load_average();

  std::printf(
      "Gloo all-reduce (sum, f32) over loopback TCP; reference: one loopback TCP stream "
      "= %.2f GB/s\n",
      reference);
  std::printf("%5s %8s %12s %6s %10s %10s %8s %6s\n", "ranks", "size", "time/call", "calls",
              "algbw", "busbw", "bus/tcp", "wrong");
  nlohmann::json cases = nlohmann::json::array();
  int64_t wrong = 0;
  for (const Row& r : rows) {
    const double algbw = static_cast<double>(r.bytes) / r.seconds / 1e9;
    const double busbw = algbw * 2.0 * (r.ranks - 1) / r.ranks;
    std::printf("%5d %8s %9.1f us %6d %6.3f GB/s %6.3f GB/s %8.3f %6lld\n", r.ranks,
                human_bytes(r.bytes).c_str(), r.seconds * 1e6, r.iters, algbw, busbw,
                busbw / reference, static_cast<long long>(r.wrong));
    wrong += r.wrong;
    cases.push_back({{"ranks", r.ranks},
                     {"bytes", r.bytes},
                     {"time_us", r.seconds * 1e6},
                     {"calls", r.iters},
                     {"algbw_GBps", algbw},
                     {"busbw_GBps", busbw},
                     {"busbw_over_tcp", busbw / reference},
                     {"wrong", r.wrong}});
  }
  const double total_s = seconds_since(start);
  std::printf("load average before: %s, after: %s; %.1f s in all\n", load_before.c_str(),
              load_after.c_str(), total_s);
  const nlohmann::json out = {
      {"benchmark", "allreduce"},
      {"backend", "gloo"},
      {"transport", "tcp loopback"},
      {"dtype", "f32"},
      {"reference",
       {{"what", "one loopback TCP stream"}, {"megabytes", o.reference_mb}, {"GBps", reference}}},
      {"cases", cases},
      {"load_average_before", load_before},
      {"load_average_after", load_after},
      {"seconds", total_s}};
  if (!o.json.empty()) {
    std::ofstream file(o.json);
    if (!file) {
      std::fprintf(stderr, "cannot write %s\n", o.json.c_str());
      return 2;
    }
    file << out.dump(2) << "\n";
    std::printf("wrote %s\n", o.json.c_str());
  }
  return wrong == 0 ? 0 : 1;
}

}  // namespace
}  // namespace elmo

int main(int argc, char** argv) {
  elmo::Options o;
  CLI::App app{"Gloo all-reduce benchmark over loopback TCP (comm/dense_allreduce.h)"};
  app.add_option("--ranks", o.ranks, "rank counts to run, e.g. --ranks 2 4")
      ->delimiter(',')
      ->check(CLI::Range(2, 64));
  app.add_option("--min_bytes", o.min_bytes, "smallest buffer in bytes")
      ->check(CLI::Range(4, 1 << 30));
  app.add_option("--max_bytes", o.max_bytes, "largest buffer in bytes (sizes grow x4)")
      ->check(CLI::Range(4, 1 << 30));
  app.add_option("--seconds_per_case", o.seconds_per_case, "timed seconds per case (3..50 calls)")
      ->check(CLI::Range(0.01, 60.0));
  app.add_option("--reference_mb", o.reference_mb, "megabytes streamed for the TCP reference")
      ->check(CLI::Range(1, 4096));
  app.add_option("--timeout", o.timeout_s, "rendezvous and collective timeout in seconds");
  app.add_option("--json", o.json, "where to write the JSON results ('' = nowhere)");
  CLI11_PARSE(app, argc, argv);
  try {
    return elmo::run(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_allreduce: %s\n", e.what());
    return 2;
  }
}
