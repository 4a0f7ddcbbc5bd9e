// Process supervision (launch.h): spawning and watching the rank processes, forwarding signals,
// stopping the job on the first failure; the local launcher, scheduler and node supervisor roles.
// Planning is launch_plan.cpp; a rank's session is rank_session.cpp.
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>

#include "comm/launch.h"
#include "runtime/log.h"

namespace elmo {

namespace {

using Clock = std::chrono::steady_clock;
using Env = std::map<std::string, std::string>;

std::atomic<int> g_received_signal{0};

extern "C" void remember_signal(int signal_number) { g_received_signal = signal_number; }

// Installs SIGINT/SIGTERM handlers that only remember the signal; restores the old ones.
class SignalCatcher {
 public:
  explicit SignalCatcher(bool active) : active_(active) {
    if (!active_) return;
    g_received_signal = 0;
    struct sigaction action {};
    action.sa_handler = remember_signal;
    sigemptyset(&action.sa_mask);
    sigaction(SIGINT, &action, &old_int_);
    sigaction(SIGTERM, &action, &old_term_);
  }
  ~SignalCatcher() {
    if (!active_) return;
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }
  int received() const { return active_ ? g_received_signal.load() : 0; }

 private:
  bool active_;
  struct sigaction old_int_ {};
  struct sigaction old_term_ {};
};

struct ChildSpec {
  int rank = 0;
  std::map<std::string, std::string> env;  // variables set on top of this process's environment
};

struct Child {
  int rank = 0;
  pid_t pid = -1;
  bool running = false;
};

std::string exit_description(int status) {
  if (WIFEXITED(status)) return str("exited with code ", WEXITSTATUS(status));
  if (WIFSIGNALED(status))
    return str("was killed by signal ", WTERMSIG(status), " (", strsignal(WTERMSIG(status)), ")");
  return "stopped";
}

int exit_code(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

// Forks and executes one child; returns its pid (-1 and logs when fork fails).
pid_t spawn_child(const std::string& executable, const std::vector<std::string>& argv,
                  const std::vector<std::string>& env) {
  // Everything the child needs is prepared before fork: after it only async-signal-safe calls.
  std::vector<char*> argv_ptrs;
  for (const auto& a : argv) argv_ptrs.push_back(const_cast<char*>(a.c_str()));
  argv_ptrs.push_back(nullptr);
  std::vector<char*> env_ptrs;
  for (const auto& e : env) env_ptrs.push_back(const_cast<char*>(e.c_str()));
  env_ptrs.push_back(nullptr);
  const std::string failure = str("elmo_fast: cannot execute ", executable, "\n");
  const int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::setpgid(0, 0);  // its own group: stopping a rank stops whatever it started too
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(1);  // the launcher died before prctl took effect
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    if (devnull >= 0) ::dup2(devnull, 0);
    ::execve(executable.c_str(), argv_ptrs.data(), env_ptrs.data());
    (void)!::write(2, failure.data(), failure.size());
    ::_exit(127);
  }
  if (devnull >= 0) ::close(devnull);
  if (pid < 0) {
    log_error("cannot start a rank process: fork failed: ", std::strerror(errno));
    return -1;
  }
  ::setpgid(pid, pid);  // also here: whichever runs first wins, both give the same group
  return pid;
}

void signal_child(const Child& child, int signal_number) {
  if (!child.running) return;
  if (::kill(-child.pid, signal_number) != 0) ::kill(child.pid, signal_number);
}

// Spawns the children and waits for them. The first failure (or a signal to this process, or a
// fault reported by fault_check that the children do not act on within grace_s) stops the
// others: SIGTERM, then SIGKILL after grace_s. Returns the first failure's exit code or 0;
// fault_rank (the rank the rendezvous lost first, if any) decides between failures seen at once.
int run_children(const std::vector<ChildSpec>& specs, const std::vector<std::string>& argv,
                 const SpawnOptions& spawn,
                 const std::function<std::optional<std::string>()>& fault_check,
                 const std::function<std::optional<int>()>& fault_rank,
                 const std::function<void(const std::string&)>& on_failure) {
  ELMO_REQUIRE(!argv.empty(), "the rank command line is empty");
  SignalCatcher signals(spawn.forward_signals);
  const auto grace = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(std::max(0.0, spawn.grace_s)));

  std::vector<Child> children;
  int first_code = 0;
  bool stopping = false;
  bool killed = false;
  Clock::time_point kill_at{};
  auto begin_stop = [&](int signal_number) {
    stopping = true;
    kill_at = Clock::now() + grace;
    for (const Child& c : children) signal_child(c, signal_number);
  };

  const Env base = current_environment();
  for (const ChildSpec& spec : specs) {
    Env env = base;
    for (const auto& [name, value] : spec.env) env[name] = value;
    std::vector<std::string> entries;
    for (const auto& [name, value] : env) entries.push_back(name + "=" + value);
    const pid_t pid = spawn_child(spawn.executable, argv, entries);
    if (pid < 0) {
      first_code = 1;
      begin_stop(SIGTERM);
      break;
    }
    children.push_back(Child{spec.rank, pid, true});
  }

  // Reaps exited children; appends (rank, status) of failures seen while not stopping.
  auto reap = [&](std::vector<std::pair<int, int>>* failures) {
    bool any_running = false;
    for (Child& c : children) {
      if (!c.running) continue;
      int status = 0;
      const pid_t r = ::waitpid(c.pid, &status, WNOHANG);
      if (r == 0 || (r < 0 && errno == EINTR)) {
        any_running = true;
        continue;
      }
      c.running = false;
      if (r < 0) continue;  // not our child any more (cannot happen unless reaped elsewhere)
      if (exit_code(status) == 0) continue;
      if (stopping)
        log_debug("rank ", c.rank, " ", exit_description(status), " while stopping");
      else
        failures->emplace_back(c.rank, status);
    }
    return any_running;
  };

  bool fault_seen = false;
  Clock::time_point fault_deadline{};
  for (;;) {
    std::vector<std::pair<int, int>> failures;
    bool any_running = reap(&failures);
    if (!failures.empty()) {
      // Ranks that stop because another one died follow it within milliseconds and may be
      // reaped in the same pass: wait a moment, then let the rendezvous, which saw the first
      // loss, name the original failure.
      std::this_thread::sleep_for(std::chrono::milliseconds(150));
      any_running = reap(&failures);
      std::pair<int, int> first = failures.front();
      if (fault_rank)
        if (const std::optional<int> named = fault_rank())
          for (const auto& failure : failures)
            if (failure.first == *named) first = failure;
      const std::string what = str("rank ", first.first, " ", exit_description(first.second));
      log_error(what, "; stopping the other ranks");
      first_code = exit_code(first.second);
      if (on_failure) on_failure(what);
      begin_stop(SIGTERM);
    }
    if (!any_running) break;
    const Clock::time_point now = Clock::now();
    if (const int sig = signals.received(); sig != 0 && !stopping) {
      log_warn("received signal ", sig, " (", strsignal(sig), "); stopping the ranks");
      first_code = 128 + sig;
      begin_stop(sig);
    }
    if (!stopping && !fault_seen && fault_check) {
      if (auto fault = fault_check()) {
        fault_seen = true;
        fault_deadline = now + grace;
        log_warn("the job failed (", *fault, "); giving the ranks ", format_seconds(spawn.grace_s),
                 " to stop by themselves");
      }
    }
    if (!stopping && fault_seen && now >= fault_deadline) {
      log_error("the ranks did not stop within ", format_seconds(spawn.grace_s),
                " after the failure; terminating them");
      first_code = 1;
      begin_stop(SIGTERM);
    }
    if (stopping && !killed && now >= kill_at) {
      for (const Child& c : children)
        if (c.running)
          log_warn("rank ", c.rank, " did not stop within ", format_seconds(spawn.grace_s),
                   "; killing it");
      for (const Child& c : children) signal_child(c, SIGKILL);
      killed = true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  // Whatever a failed rank started in its process group goes with it.
  if (stopping)
    for (const Child& c : children) ::kill(-c.pid, SIGKILL);
  return first_code;
}

// "rank 4" or "ranks 4-7".
std::string rank_span(int first, int count) {
  return count == 1 ? str("rank ", first) : str("ranks ", first, "-", first + count - 1);
}

std::string random_token() {
  unsigned char bytes[16] = {};
  std::ifstream urandom("/dev/urandom", std::ios::binary);
  if (!urandom.read(reinterpret_cast<char*>(bytes), sizeof bytes)) {
    std::random_device device;
    for (auto& b : bytes) b = static_cast<unsigned char>(device());
  }
  static const char kHex[] = "0123456789abcdef";
  std::string token;
  for (unsigned char b : bytes) {
    token += kHex[b >> 4];
    token += kHex[b & 15];
  }
  return token;
}

Env rank_env(int rank, int world, int local_rank, int local_size, int node, int nodes,
             const std::string& root_host, int root_port, const std::string& token, int device) {
  return Env{{"ELMO_RANK", std::to_string(rank)},
             {"ELMO_WORLD_SIZE", std::to_string(world)},
             {"ELMO_LOCAL_RANK", std::to_string(local_rank)},
             {"ELMO_LOCAL_SIZE", std::to_string(local_size)},
             {"ELMO_NODE", std::to_string(node)},
             {"ELMO_NODES", std::to_string(nodes)},
             {"ELMO_ROOT_URI", root_host},
             {"ELMO_ROOT_PORT", std::to_string(root_port)},
             {"ELMO_JOB_TOKEN", token},
             {"ELMO_DEVICE_ID", std::to_string(device)}};
}

}  // namespace

int run_local_launcher(const ProcessPlan& plan, const std::vector<std::string>& child_argv,
                       const SpawnOptions& spawn) {
  ELMO_CHECK(plan.kind == ProcessKind::kLocalLauncher, "run_local_launcher with a ",
             process_kind_name(plan.kind), " plan");
  const int nodes = plan.nodes;
  const int workers = plan.workers_per_node;
  const int world = nodes * workers;
  ELMO_CHECK(static_cast<int>(plan.local_devices.size()) == world, "devices for ", world, " ranks");
  const std::string token = plan.job_token.empty() ? random_token() : plan.job_token;
  KvServer server("127.0.0.1", plan.root_port, token);
  log_info("launching ", world, " rank(s) on this machine (", nodes, " node(s) x ", workers,
           "); rendezvous at 127.0.0.1:", server.port());
  std::vector<ChildSpec> specs;
  for (int r = 0; r < world; ++r)
    specs.push_back({r, rank_env(r, world, r % workers, workers, r / workers, nodes, "127.0.0.1",
                                 server.port(), token, plan.local_devices[r])});
  return run_children(
      specs, child_argv, spawn, [&] { return server.fault(); },
      [&]() -> std::optional<int> { return server.fault_rank(); }, nullptr);
}

int run_scheduler(const ProcessPlan& plan) {
  ELMO_CHECK(plan.kind == ProcessKind::kScheduler, "run_scheduler with a ",
             process_kind_name(plan.kind), " plan");
  const int nodes = plan.nodes;
  KvServer server("0.0.0.0", plan.root_port, plan.job_token);
  server.set("launch/nodes", std::to_string(nodes));
  const std::string endpoint = str(plan.root_host, ":", server.port());
  log_info("scheduler: rendezvous listening on 0.0.0.0:", server.port(), "; waiting up to ",
           format_seconds(plan.timeout_s), " for ", nodes,
           " node(s) started with --role worker "
           "--root_uri <this host> --root_port ",
           server.port(), " and the same job token");

  // 1. Nodes register as launch/node/<i> = "<workers> <pid> <hostname>".
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                           std::chrono::duration<double>(plan.timeout_s));
  auto seconds_left = [&] {
    return std::max(0.0, std::chrono::duration<double>(deadline - Clock::now()).count());
  };
  std::vector<int> workers(nodes);
  std::vector<std::string> hosts(nodes);
  for (int i = 0; i < nodes; ++i) {
    std::string entry;
    try {
      entry = server.get(str("launch/node/", i), seconds_left());
    } catch (const PeerLost& lost) {
      log_error("the job failed before it started: ", lost.what());
      return 1;
    } catch (const CommError&) {
      std::string joined;
      int count = 0;
      for (int q = 0; q < nodes; ++q)
        if (auto e = server.try_get(str("launch/node/", q))) {
          ++count;
          std::istringstream in(*e);
          int w = 0;
          long pid = 0;
          std::string host;
          in >> w >> pid >> host;
          joined += str(joined.empty() ? "" : ", ", "node ", q, " on ", host);
        }
      log_error("only ", count, " of ", nodes, " node(s) joined the rendezvous at ", endpoint,
                " within ", format_seconds(plan.timeout_s), " (", nodes - count,
                " missing; joined: ", joined.empty() ? "none" : joined,
                "); start each missing node with --role worker "
                "--root_uri <this host> --root_port ",
                server.port(), " and the same job token");
      return 1;
    }
    std::istringstream in(entry);
    long pid = 0;
    in >> workers[i] >> pid >> hosts[i];
    if (!in || workers[i] < 1) {
      log_error("node ", i, " registered a malformed entry '", entry, "'");
      return 1;
    }
  }

  // 2. Rank bases: consecutive ranks per node, nodes in index order.
  std::vector<int> base(nodes, 0);
  int total = 0;
  std::string layout;
  for (int i = 0; i < nodes; ++i) {
    base[i] = total;
    total += workers[i];
    layout += str(i ? ", " : "", "node ", i, " (", hosts[i], ") ", rank_span(base[i], workers[i]));
  }
  for (int i = 0; i < nodes; ++i)
    server.set(str("launch/plan/", i), str(base[i], " ", total, " ", nodes));
  log_info("scheduler: ", total, " rank(s) on ", nodes, " node(s): ", layout);

  // 3. Every rank must join within the timeout, then the job runs until all leave or a fault.
  const auto join_deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                                std::chrono::duration<double>(plan.timeout_s));
  int code = 0;
  for (;;) {
    const JobState state = server.wait_for_job(total, 0.5);
    if (state == JobState::kFinished) break;
    if (state == JobState::kFailed) {
      log_error("the job failed: ", server.fault().value_or("?"));
      code = 1;
      break;
    }
    const std::vector<int> joined = server.joined_ranks();
    if (static_cast<int>(joined.size()) >= total) {
      if (server.wait_for_job(total, -1.0) == JobState::kFailed) {
        log_error("the job failed: ", server.fault().value_or("?"));
        code = 1;
      }
      break;
    }
    if (Clock::now() >= join_deadline) {
      std::vector<int> missing;
      for (int r = 0; r < total; ++r)
        if (!std::binary_search(joined.begin(), joined.end(), r)) missing.push_back(r);
      std::string list;
      for (size_t k = 0; k < missing.size() && k < 16; ++k) list += str(k ? ", " : "", missing[k]);
      if (missing.size() > 16) list += ", ...";
      log_error(missing.size() == 1 ? "rank " : "ranks ", list, " of ", total,
                " did not join the rendezvous within ", format_seconds(plan.timeout_s),
                " of the node assignment; check the logs of their nodes");
      code = 1;
      break;
    }
  }
  if (code == 0) log_info("scheduler: every rank finished");
  // Let the node supervisors see their children exit before the store goes away.
  const auto linger_end = Clock::now() + std::chrono::seconds(15);
  while (Clock::now() < linger_end && server.add("launch/nodes_done", 0) < nodes)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  return code;
}

int run_node_supervisor(const ProcessPlan& plan, const std::vector<std::string>& child_argv,
                        const SpawnOptions& spawn) {
  ELMO_CHECK(plan.kind == ProcessKind::kNodeSupervisor, "run_node_supervisor with a ",
             process_kind_name(plan.kind), " plan");
  KvClientOptions options;
  options.host = plan.root_host;
  options.port = plan.root_port;
  options.token = plan.job_token;
  options.rank = -1;
  options.timeout_s = plan.timeout_s;
  options.connect_timeout_s = plan.timeout_s;
  KvClient client(options);
  const std::string endpoint = client.endpoint();
  const std::string hostname = local_hostname();
  const int workers = plan.workers_per_node;

  const int nodes = static_cast<int>(std::stol(client.get("launch/nodes")));
  if (plan.nodes > 0 && plan.nodes != nodes)
    throw UsageError(str("--world_size ", plan.nodes, " differs from the scheduler's ", nodes,
                         " at ", endpoint));
  const int index = plan.node_rank >= 0 ? plan.node_rank
                                        : static_cast<int>(client.add("launch/join_order", 1) - 1);
  if (index >= nodes)
    throw CommError(str("this node joined the scheduler at ", endpoint, " as node ", index,
                        " but the job has only ", nodes,
                        " node(s) (--world_size); is a node "
                        "started twice?"));
  if (client.add(str("launch/claim/", index), 1) != 1)
    throw CommError(str("node index ", index, " at ", endpoint,
                        " was taken by another node; give "
                        "every node a distinct --rank, or none"));
  client.set(str("launch/node/", index), str(workers, " ", ::getpid(), " ", hostname));
  const std::string assignment = client.get(str("launch/plan/", index));
  std::istringstream in(assignment);
  int base = 0;
  int total = 0;
  int node_count = 0;
  in >> base >> total >> node_count;
  log_info("node ", index, " of ", node_count, " (", hostname, "): ", rank_span(base, workers),
           " of ", total);

  std::mutex fault_mutex;
  std::optional<std::string> fault;
  std::optional<int> lost_rank;
  client.start_monitor([&](const PeerLost& lost) {
    std::lock_guard<std::mutex> lock(fault_mutex);
    fault = lost.what();
    if (lost.rank() >= 0) lost_rank = lost.rank();
  });
  std::vector<ChildSpec> specs;
  for (int l = 0; l < workers; ++l)
    specs.push_back(
        {base + l, rank_env(base + l, total, l, workers, index, node_count, plan.root_host,
                            plan.root_port, plan.job_token, plan.local_devices.at(l))});
  const int code = run_children(
      specs, child_argv, spawn,
      [&]() -> std::optional<std::string> {
        std::lock_guard<std::mutex> lock(fault_mutex);
        return fault;
      },
      [&]() -> std::optional<int> {
        std::lock_guard<std::mutex> lock(fault_mutex);
        return lost_rank;
      },
      [&](const std::string& what) {
        try {
          client.report_fault(str("node ", index, " (", hostname, "): ", what));
        } catch (const std::exception&) {
          // The scheduler is gone: nothing left to tell.
        }
      });
  try {
    client.add("launch/nodes_done", 1);
  } catch (const std::exception&) {
  }
  client.leave();
  return code;
}

}  // namespace elmo
