// Launch planning (pure), child process management, the scheduler and node supervisor roles, and
// a rank's session. See launch.h.
#include "comm/launch.h"

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

#include "runtime/log.h"

extern char** environ;

namespace elmo {

namespace {

using Clock = std::chrono::steady_clock;

// ---- reading flags and variables -----------------------------------------------------------

using Env = std::map<std::string, std::string>;

std::optional<std::string> lookup(const Env& env, const std::string& name) {
  auto it = env.find(name);
  if (it == env.end()) return std::nullopt;
  return it->second;
}

int parse_int(const std::string& name, const std::string& text) {
  size_t used = 0;
  long value = 0;
  try {
    value = std::stol(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  // Trailing spaces are tolerated (srun's variables sometimes carry them), nothing else.
  while (used > 0 && used < text.size() && text[used] == ' ') ++used;
  if (used == 0 || used != text.size() || value < INT32_MIN || value > INT32_MAX)
    throw UsageError(str(name, "='", text, "' is not an integer"));
  return static_cast<int>(value);
}

std::optional<int> optional_int(const Env& env, const std::string& name) {
  auto text = lookup(env, name);
  if (!text) return std::nullopt;
  return parse_int(name, *text);
}

int required_int(const Env& env, const std::string& name, const std::string& source) {
  auto value = optional_int(env, name);
  if (!value) throw UsageError(str(name, " is not set (needed by ", source, ")"));
  return *value;
}

// SLURM_TASKS_PER_NODE: "4(x2),3" = 4 tasks on each of two nodes, then 3.
std::optional<int> slurm_tasks_on_node(const std::string& text, int node) {
  std::stringstream in(text);
  std::string part;
  int index = 0;
  while (std::getline(in, part, ',')) {
    int tasks = 0;
    int repeat = 1;
    if (std::sscanf(part.c_str(), "%d(x%d)", &tasks, &repeat) < 1) return std::nullopt;
    if (node < index + repeat) return tasks;
    index += repeat;
  }
  return std::nullopt;
}

std::string token_help() {
  return "pass --job_token TOKEN or set ELMO_JOB_TOKEN (any secret string, the same for every "
         "process of the job, e.g. from `openssl rand -hex 16`)";
}

void check_device(int device, int cuda_devices) {
  if (cuda_devices <= 0)
    throw UsageError(
        "--device_ids names CUDA devices but none is visible on this machine; drop "
        "--device_ids (or pass --no_cuda)");
  if (device >= cuda_devices)
    throw UsageError(str("--device_ids names device ", device, " but this machine has ",
                         cuda_devices, " GPU(s) (0..", cuda_devices - 1, ")"));
}

// The device of the process with index `index` on this machine.
int device_for(const LaunchOptions& o, int index, int cuda_devices) {
  if (!o.device_ids.empty()) {
    if (index >= static_cast<int>(o.device_ids.size()))
      throw UsageError(str("--device_ids names ", o.device_ids.size(),
                           " device(s) but this machine runs process ", index,
                           " (counting from 0); give one device per process on the machine"));
    check_device(o.device_ids[index], cuda_devices);
    return o.device_ids[index];
  }
  if (o.no_cuda || cuda_devices <= 0) return -1;
  return index % cuda_devices;
}

std::vector<int> devices_for(const LaunchOptions& o, int count, int cuda_devices) {
  if (!o.device_ids.empty() && static_cast<int>(o.device_ids.size()) < count)
    throw UsageError(str("--device_ids names ", o.device_ids.size(),
                         " device(s) but this machine runs ", count,
                         " rank(s); give one device per rank"));
  std::vector<int> devices(count);
  for (int i = 0; i < count; ++i) devices[i] = device_for(o, i, cuda_devices);
  return devices;
}

std::string first_manual_flag(const LaunchOptions& o) {
  if (o.nodes > 0) return "--nodes";
  if (o.workers_per_node > 0) return "--workers_per_node";
  if (!o.role.empty()) return "--role";
  if (o.world_size > 0) return "--world_size";
  if (!o.host_map.empty()) return "--host_map";
  return "";
}

int host_map_workers(const std::string& spec, const std::string& hostname) {
  std::string text = spec;
  const auto first = spec.find_first_not_of(" \t\r\n");
  if (first == std::string::npos) throw UsageError("--host_map is empty");
  if (spec[first] != '{') {
    std::ifstream file(spec);
    if (!file)
      throw UsageError(str("--host_map '", spec, "' is neither a JSON object nor a readable file"));
    std::stringstream buffer;
    buffer << file.rdbuf();
    text = buffer.str();
  }
  nlohmann::json map;
  try {
    map = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw UsageError(str("--host_map is not valid JSON: ", e.what()));
  }
  if (!map.is_object() || map.empty())
    throw UsageError(
        "--host_map must be a JSON object of hostname: workers, e.g. "
        "{\"host-a\": 4, \"host-b\": 2}");
  std::string hosts;
  for (auto it = map.begin(); it != map.end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 1 ||
        it.value().get<int64_t>() > 4096)
      throw UsageError(str("--host_map entry \"", it.key(), "\" must be a worker count >= 1 (got ",
                           it.value().dump(), ")"));
    hosts += (hosts.empty() ? "" : ", ") + it.key();
  }
  auto short_name = [](const std::string& name) { return name.substr(0, name.find('.')); };
  if (map.contains(hostname)) return map[hostname].get<int>();
  for (auto it = map.begin(); it != map.end(); ++it)
    if (short_name(it.key()) == short_name(hostname)) return it.value().get<int>();
  throw UsageError(
      str("--host_map has no entry for this machine '", hostname, "' (it lists: ", hosts, ")"));
}

void validate(const LaunchOptions& o) {
  if (o.nodes < 0) throw UsageError(str("--nodes must be >= 1 (got ", o.nodes, ")"));
  if (o.workers_per_node < 0)
    throw UsageError(str("--workers_per_node must be >= 1 (got ", o.workers_per_node, ")"));
  if (o.world_size < 0) throw UsageError(str("--world_size must be >= 1 (got ", o.world_size, ")"));
  if (o.root_port < 0 || o.root_port > 65535)
    throw UsageError(str("--root_port ", o.root_port, " is out of range 1..65535"));
  if (!(o.timeout_s > 0))
    throw UsageError(str("--dist_timeout must be > 0 (got ", o.timeout_s, ")"));
  if (o.rank < -1) throw UsageError(str("--rank must be >= 0 (got ", o.rank, ")"));
  for (int id : o.device_ids)
    if (id < 0) throw UsageError(str("--device_ids: device ", id, " is negative"));
  if (o.no_cuda && !o.device_ids.empty())
    throw UsageError("--device_ids and --no_cuda contradict each other; drop one of them");
  if (!o.role.empty() && o.role != "scheduler" && o.role != "worker" && o.role != "server")
    throw UsageError(str("--role must be scheduler or worker (got '", o.role, "')"));
  if (o.nodes > 4096 || o.workers_per_node > 4096 || o.world_size > 65536)
    throw UsageError("--nodes/--workers_per_node/--world_size are implausibly large");
}

ProcessPlan plan_child(const LaunchOptions& o, const Env& env, int cuda_devices,
                       const std::string& token) {
  const std::string source = "ELMO_* variables (started by an elmo_fast launcher)";
  ProcessPlan plan;
  plan.kind = ProcessKind::kRank;
  plan.source = source;
  plan.timeout_s = o.timeout_s;
  Topology& t = plan.topology;
  t.rank = required_int(env, "ELMO_RANK", source);
  t.world_size = required_int(env, "ELMO_WORLD_SIZE", source);
  t.local_rank = optional_int(env, "ELMO_LOCAL_RANK").value_or(t.rank);
  t.local_size = optional_int(env, "ELMO_LOCAL_SIZE").value_or(t.world_size);
  t.node = optional_int(env, "ELMO_NODE").value_or(0);
  plan.nodes = optional_int(env, "ELMO_NODES").value_or(1);
  if (t.world_size < 1 || t.rank < 0 || t.rank >= t.world_size)
    throw UsageError(str("ELMO_RANK=", t.rank, " is not a rank of ELMO_WORLD_SIZE=", t.world_size));
  if (t.local_size < 1 || t.local_rank < 0 || t.local_rank >= t.local_size)
    throw UsageError(
        str("ELMO_LOCAL_RANK=", t.local_rank, " is not below ELMO_LOCAL_SIZE=", t.local_size));
  if (plan.nodes < 1 || t.node < 0 || t.node >= plan.nodes)
    throw UsageError(str("ELMO_NODE=", t.node, " is not below ELMO_NODES=", plan.nodes));
  plan.root_host = lookup(env, "ELMO_ROOT_URI").value_or("");
  if (plan.root_host.empty())
    throw UsageError(str("ELMO_ROOT_URI is not set (needed by ", source, ")"));
  plan.root_port = required_int(env, "ELMO_ROOT_PORT", source);
  if (plan.root_port < 1 || plan.root_port > 65535)
    throw UsageError(str("ELMO_ROOT_PORT=", plan.root_port, " is out of range 1..65535"));
  if (token.empty()) throw UsageError(str("ELMO_JOB_TOKEN is not set (needed by ", source, ")"));
  plan.job_token = token;
  if (o.no_cuda)
    plan.device_id = -1;
  else if (auto device = optional_int(env, "ELMO_DEVICE_ID"))
    plan.device_id = *device;
  else
    plan.device_id = device_for(o, t.local_rank, cuda_devices);
  if (plan.device_id < -1 ||
      (plan.device_id >= 0 && cuda_devices > 0 && plan.device_id >= cuda_devices))
    throw UsageError(str("ELMO_DEVICE_ID=", plan.device_id, " is not a device of this machine (",
                         cuda_devices, " GPU(s))"));
  return plan;
}

// mpirun, srun, torchrun-style: the launcher decided the ranks; rank 0 serves the store.
ProcessPlan plan_external(const LaunchOptions& o, const Env& env, int cuda_devices,
                          const std::string& token, const std::string& source,
                          const std::string& launcher) {
  ProcessPlan plan;
  plan.kind = ProcessKind::kRank;
  plan.source = source;
  plan.timeout_s = o.timeout_s;
  Topology& t = plan.topology;
  if (launcher == "mpirun") {
    t.rank = required_int(env, "OMPI_COMM_WORLD_RANK", source);
    t.world_size = required_int(env, "OMPI_COMM_WORLD_SIZE", source);
    t.local_rank = optional_int(env, "OMPI_COMM_WORLD_LOCAL_RANK").value_or(0);
    t.local_size = optional_int(env, "OMPI_COMM_WORLD_LOCAL_SIZE").value_or(1);
    // Open MPI names no node index: ranks are assumed placed by node (its default mapping).
    if (t.local_size >= 1) t.node = t.rank / t.local_size;
    plan.nodes = t.local_size >= 1 ? (t.world_size + t.local_size - 1) / t.local_size : 1;
  } else if (launcher == "srun") {
    t.rank = required_int(env, "SLURM_PROCID", source);
    auto tasks = optional_int(env, "SLURM_NTASKS");
    if (!tasks) tasks = optional_int(env, "SLURM_NPROCS");
    if (!tasks) throw UsageError(str("SLURM_NTASKS is not set (needed by ", source, ")"));
    t.world_size = *tasks;
    t.local_rank = optional_int(env, "SLURM_LOCALID").value_or(0);
    t.node = optional_int(env, "SLURM_NODEID").value_or(0);
    auto nodes = optional_int(env, "SLURM_NNODES");
    if (!nodes) nodes = optional_int(env, "SLURM_JOB_NUM_NODES");
    plan.nodes = nodes.value_or(t.node + 1);
    std::optional<int> local_size = optional_int(env, "SLURM_NTASKS_PER_NODE");
    if (!local_size) {
      if (auto per_node = lookup(env, "SLURM_TASKS_PER_NODE")) {
        local_size = slurm_tasks_on_node(*per_node, t.node);
        if (!local_size)
          throw UsageError(
              str("SLURM_TASKS_PER_NODE='", *per_node, "' names no task count for node ", t.node));
      }
    }
    t.local_size = local_size.value_or(1);
  } else {
    t.rank = required_int(env, "RANK", source);
    t.world_size = required_int(env, "WORLD_SIZE", source);
    t.local_rank = optional_int(env, "LOCAL_RANK").value_or(0);
    t.local_size = optional_int(env, "LOCAL_WORLD_SIZE").value_or(1);
    const int guessed_node = t.local_size >= 1 ? t.rank / t.local_size : 0;
    t.node = optional_int(env, "GROUP_RANK").value_or(guessed_node);
    plan.nodes =
        optional_int(env, "GROUP_WORLD_SIZE")
            .value_or(t.local_size >= 1 ? (t.world_size + t.local_size - 1) / t.local_size : 1);
  }
  const std::string vars = launcher == "mpirun" ? "OMPI_COMM_WORLD_*"
                           : launcher == "srun" ? "SLURM_*"
                                                : "RANK/WORLD_SIZE/LOCAL_RANK";
  if (t.world_size < 1 || t.rank < 0 || t.rank >= t.world_size)
    throw UsageError(
        str(source, ": rank ", t.rank, " is not a rank of world ", t.world_size, " (", vars, ")"));
  if (t.local_size < 1 || t.local_rank < 0 || t.local_rank >= t.local_size)
    throw UsageError(str(source, ": local rank ", t.local_rank, " is not below the local size ",
                         t.local_size, " (", vars, ")"));
  if (plan.nodes < 1 || t.node < 0 || t.node >= plan.nodes)
    throw UsageError(str(source, ": node ", t.node, " is not below the node count ", plan.nodes,
                         " (", vars, ")"));
  plan.device_id = device_for(o, t.local_rank, cuda_devices);
  if (t.world_size == 1) {  // nothing to meet: a plain single process
    plan.kind = ProcessKind::kSingle;
    plan.topology = Topology{};
    plan.nodes = 1;
    return plan;
  }
  plan.root_host = !o.root_uri.empty() ? o.root_uri : lookup(env, "MASTER_ADDR").value_or("");
  if (o.root_port > 0)
    plan.root_port = o.root_port;
  else if (auto port = optional_int(env, "MASTER_PORT"))
    plan.root_port = *port;
  if (plan.root_host.empty() || plan.root_port == 0)
    throw UsageError(str("ranks started by ", source,
                         " need the rendezvous address: pass --root_uri HOST --root_port PORT "
                         "(the host of rank 0 and a free port there) or set MASTER_ADDR and "
                         "MASTER_PORT"));
  if (plan.root_port < 1 || plan.root_port > 65535)
    throw UsageError(str("MASTER_PORT=", plan.root_port, " is out of range 1..65535"));
  if (token.empty())
    throw UsageError(str("ranks started by ", source, " need a job token: ", token_help(),
                         launcher == "mpirun" ? "; with mpirun add -x ELMO_JOB_TOKEN" : ""));
  plan.job_token = token;
  plan.serve_store = t.rank == 0;
  return plan;
}

ProcessPlan plan_scheduler(const LaunchOptions& o, const std::string& token) {
  if (o.world_size < 1)
    throw UsageError("--role scheduler needs --world_size (the number of nodes that will join)");
  if (o.root_port < 1)
    throw UsageError(
        "--role scheduler needs --root_port (the port it listens on; every worker "
        "passes the same --root_port)");
  if (token.empty()) throw UsageError(str("--role scheduler needs a job token: ", token_help()));
  ProcessPlan plan;
  plan.kind = ProcessKind::kScheduler;
  plan.source = "--role scheduler";
  plan.nodes = o.world_size;
  plan.root_host = o.root_uri.empty() ? "0.0.0.0" : o.root_uri;
  plan.root_port = o.root_port;
  plan.job_token = token;
  plan.timeout_s = o.timeout_s;
  plan.workers_per_node = 0;
  return plan;
}

ProcessPlan plan_node(const LaunchOptions& o, int cuda_devices, const std::string& hostname,
                      const std::string& token) {
  const std::string what = o.role.empty() ? "--root_uri" : "--role " + o.role;
  if (o.root_uri.empty())
    throw UsageError(str(o.role.empty() ? "--world_size" : what,
                         " starts a node of a cluster job and needs --root_uri (the scheduler's "
                         "host) and --root_port; start the scheduler with --role scheduler"));
  if (o.root_port < 1)
    throw UsageError(str(what, " needs --root_port (the port of the scheduler)"));
  if (token.empty()) throw UsageError(str(what, " needs a job token: ", token_help()));
  if (o.rank >= 0 && o.world_size > 0 && o.rank >= o.world_size)
    throw UsageError(
        str("--rank ", o.rank, " is not a node index below --world_size ", o.world_size));
  int workers = 1;
  if (!o.host_map.empty()) {
    if (o.workers_per_node > 0)
      throw UsageError(
          "--host_map and --workers_per_node both give the workers of this node; "
          "keep one");
    workers = host_map_workers(o.host_map, hostname.empty() ? local_hostname() : hostname);
  } else if (o.workers_per_node > 0) {
    workers = o.workers_per_node;
  } else if (!o.device_ids.empty()) {
    workers = static_cast<int>(o.device_ids.size());
  }
  ProcessPlan plan;
  plan.kind = ProcessKind::kNodeSupervisor;
  plan.source = what;
  plan.nodes = o.world_size;
  plan.workers_per_node = workers;
  plan.local_devices = devices_for(o, workers, cuda_devices);
  plan.node_rank = o.rank;
  plan.root_host = o.root_uri;
  plan.root_port = o.root_port;
  plan.job_token = token;
  plan.timeout_s = o.timeout_s;
  return plan;
}

ProcessPlan plan_local(const LaunchOptions& o, int cuda_devices, const std::string& token) {
  if (!o.host_map.empty())
    throw UsageError(
        "--host_map applies to the nodes of a cluster job (--role worker); on one "
        "machine use --nodes/--workers_per_node");
  if (o.rank >= 0) throw UsageError("--rank applies to --role worker only");
  ProcessPlan plan;
  plan.kind = ProcessKind::kLocalLauncher;
  plan.source = "--nodes/--workers_per_node";
  plan.nodes = std::max(1, o.nodes);
  if (o.workers_per_node > 0)
    plan.workers_per_node = o.workers_per_node;
  else if (!o.device_ids.empty())
    plan.workers_per_node = std::max(1, static_cast<int>(o.device_ids.size()) / plan.nodes);
  else
    plan.workers_per_node = 1;
  plan.local_devices = devices_for(o, plan.nodes * plan.workers_per_node, cuda_devices);
  plan.root_host = "127.0.0.1";
  plan.root_port = o.root_port;
  plan.job_token = token;
  plan.timeout_s = o.timeout_s;
  return plan;
}

}  // namespace

const char* process_kind_name(ProcessKind kind) {
  switch (kind) {
    case ProcessKind::kSingle:
      return "single process";
    case ProcessKind::kLocalLauncher:
      return "local launcher";
    case ProcessKind::kScheduler:
      return "scheduler";
    case ProcessKind::kNodeSupervisor:
      return "node supervisor";
    case ProcessKind::kRank:
      return "rank";
  }
  return "?";
}

ProcessPlan plan_process(const LaunchOptions& o, const Env& env, int cuda_devices,
                         const std::string& hostname) {
  validate(o);
  const std::string token =
      !o.job_token.empty() ? o.job_token : lookup(env, "ELMO_JOB_TOKEN").value_or("");
  const std::string manual = first_manual_flag(o);
  const bool cluster = !o.role.empty() || !o.root_uri.empty() || o.world_size > 0;

  if (env.count("ELMO_RANK")) {
    if (!manual.empty())
      throw UsageError(str(manual,
                           " must not be given to a rank started by an elmo_fast launcher "
                           "(ELMO_RANK is set); unset ELMO_RANK to launch a new job"));
    return plan_child(o, env, cuda_devices, token);
  }
  if (!manual.empty()) {
    if (env.count("OMPI_COMM_WORLD_RANK"))
      throw UsageError(str(manual,
                           " starts ranks by itself and must not be used under mpirun "
                           "(OMPI_COMM_WORLD_RANK is set): mpirun already started them; "
                           "drop --nodes/--workers_per_node/--role/--world_size/--host_map"));
    if (o.role == "scheduler") {
      if (o.nodes > 1)
        throw UsageError(
            "--nodes runs several nodes on one machine and does not go with --role "
            "scheduler; --world_size gives the number of nodes");
      return plan_scheduler(o, token);
    }
    if (cluster) {
      if (o.nodes > 1)
        throw UsageError(
            "--nodes runs several nodes on one machine and does not go with "
            "--role/--root_uri/--world_size; start one --role worker per node");
      return plan_node(o, cuda_devices, hostname, token);
    }
    return plan_local(o, cuda_devices, token);
  }
  if (env.count("OMPI_COMM_WORLD_RANK"))
    return plan_external(o, env, cuda_devices, token, "mpirun (OMPI_COMM_WORLD_*)", "mpirun");
  if (env.count("SLURM_PROCID") && (env.count("SLURM_NTASKS") || env.count("SLURM_NPROCS")))
    return plan_external(o, env, cuda_devices, token, "srun (SLURM_*)", "srun");
  if (env.count("RANK") && env.count("WORLD_SIZE"))
    return plan_external(o, env, cuda_devices, token, "RANK/WORLD_SIZE variables", "env");
  if (!o.root_uri.empty()) return plan_node(o, cuda_devices, hostname, token);
  if (o.root_port > 0)
    throw UsageError(
        "--root_port alone starts nothing: add --role scheduler --world_size N (the "
        "scheduler) or --root_uri HOST (a node), or --nodes for a local job");
  if (o.rank >= 0) throw UsageError("--rank applies to --role worker only");
  if (o.device_ids.size() > 1) return plan_local(o, cuda_devices, token);
  ProcessPlan plan;
  plan.kind = ProcessKind::kSingle;
  plan.source = "no launch flags";
  plan.timeout_s = o.timeout_s;
  plan.device_id = device_for(o, 0, cuda_devices);
  return plan;
}

std::vector<std::string> strip_launch_flags(const std::vector<std::string>& argv) {
  static const char* const kSingleValue[] = {"--nodes",    "--workers_per_node", "--role",
                                             "--root_uri", "--root_port",        "--world_size",
                                             "--rank",     "--host_map",         "--job_token"};
  auto is_flag = [](const std::string& arg, const std::string& flag) {
    return arg == flag || arg.rfind(flag + "=", 0) == 0;
  };
  std::vector<std::string> out;
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& arg = argv[i];
    if (i == 0) {
      out.push_back(arg);
      continue;
    }
    if (arg == "--") {
      out.insert(out.end(), argv.begin() + static_cast<long>(i), argv.end());
      break;
    }
    bool stripped = false;
    for (const char* flag : kSingleValue) {
      if (!is_flag(arg, flag)) continue;
      stripped = true;
      if (arg == flag && i + 1 < argv.size()) ++i;  // its value
      break;
    }
    if (!stripped && is_flag(arg, "--device_ids")) {
      stripped = true;
      // Its values: device numbers ("0", "1", or "0,1"); anything else is the next argument.
      auto is_device_list = [](const std::string& value) {
        return !value.empty() && value.find_first_not_of("0123456789,") == std::string::npos;
      };
      if (arg == "--device_ids")
        while (i + 1 < argv.size() && is_device_list(argv[i + 1])) ++i;
    }
    if (!stripped) out.push_back(arg);
  }
  return out;
}

std::map<std::string, std::string> current_environment() {
  Env env;
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    const char* equals = std::strchr(*entry, '=');
    if (equals == nullptr) continue;
    env.emplace(std::string(static_cast<const char*>(*entry), equals), std::string(equals + 1));
  }
  return env;
}

std::string local_hostname() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0) return "localhost";
  return name;
}

// ---- child processes -----------------------------------------------------------------------

namespace {

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

// ---- rank session --------------------------------------------------------------------------

std::unique_ptr<RankSession> RankSession::join(const ProcessPlan& plan,
                                               std::function<void(const PeerLost&)> on_fault) {
  if (plan.kind == ProcessKind::kSingle) return nullptr;
  ELMO_CHECK(plan.kind == ProcessKind::kRank, "RankSession::join with a ",
             process_kind_name(plan.kind), " plan");
  std::unique_ptr<RankSession> session(new RankSession());
  session->topology_ = plan.topology;
  session->timeout_s_ = plan.timeout_s;
  const Topology& t = plan.topology;
  set_error_context(t.label());
  if (plan.serve_store) {
    session->server_ = std::make_unique<KvServer>("0.0.0.0", plan.root_port, plan.job_token);
    log_info("serving the rendezvous on 0.0.0.0:", session->server_->port(), " for ", t.world_size,
             " ranks");
  }
  KvClientOptions options;
  options.host = plan.serve_store ? "127.0.0.1" : plan.root_host;
  options.port = plan.root_port;
  options.token = plan.job_token;
  options.rank = t.rank;
  options.timeout_s = plan.timeout_s;
  options.connect_timeout_s = plan.timeout_s;
  session->client_ = std::make_unique<KvClient>(options);
  session->local_address_ = local_address_towards(plan.root_host);
  session->client_->set(str("join/rank/", t.rank),
                        str(::getpid(), " ", local_hostname(), " ", session->local_address_));
  const std::vector<std::string> peers =
      session->client_->gather_ranks("join/rank/", t.world_size, plan.timeout_s);
  // The route to the rendezvous host is loopback when this rank runs on it (rank 0 under
  // mpirun, or a node on the scheduler's machine); peers on other machines need a routable
  // address: take the route towards one of them.
  if (session->local_address_.rfind("127.", 0) == 0 || session->local_address_ == "::1") {
    const std::string my_host = local_hostname();
    for (const std::string& peer : peers) {
      std::istringstream in(peer);
      long pid = 0;
      std::string host;
      std::string address;
      in >> pid >> host >> address;
      if (host != my_host && !address.empty() && address.rfind("127.", 0) != 0 &&
          address != "::1") {
        session->local_address_ = local_address_towards(address);
        break;
      }
    }
  }
  session->client_->start_monitor(std::move(on_fault));
  return session;
}

RankSession::~RankSession() = default;

void RankSession::finish() {
  if (!client_) return;
  client_->leave();
  if (server_) {
    if (server_->wait_for_job(topology_.world_size, timeout_s_) != JobState::kFinished)
      log_warn("not every rank left the rendezvous within ", format_seconds(timeout_s_),
               "; closing it anyway");
    server_.reset();
  }
}

}  // namespace elmo
