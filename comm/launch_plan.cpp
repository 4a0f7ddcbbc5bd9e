// Launch planning (launch.h): what this process is in a job, from the launch flags and the
// environment (pure: plan_process), and the launcher's argv and environment helpers
// (strip_launch_flags, current_environment, local_hostname). The launcher roles that run the plan
// are launch_supervise.cpp; a rank's session is rank_session.cpp.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "comm/launch.h"
#include "runtime/log.h"

extern char** environ;

namespace elmo {

namespace {

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

}  // namespace elmo
