// Launch: decides what this process is in a job (single process, local launcher, scheduler, node
// supervisor or rank) from the launch flags and the environment, and runs the launcher roles.
//
// Flags follow lapse-elmo: --world_size is the number of NODES of a cluster job, each node brings
// --workers_per_node rank processes (one per GPU, or CPU workers), --host_map gives the workers
// per node by hostname. Ranks can also come from mpirun (OMPI_COMM_WORLD_*), srun (SLURM_*) or
// torchrun-style RANK/WORLD_SIZE variables; then rank 0 serves the rendezvous store.
//
//   elmo_fast train ...                                  one process (world 1)
//   elmo_fast train --nodes 2 --workers_per_node 2 ...   local launcher: 4 ranks on this machine
//   elmo_fast train --role scheduler --root_port 9091 --world_size 2 --job_token T ...
//   elmo_fast train --role worker --root_uri host-a --root_port 9091 --job_token T ...
//                                                        (one per node; spawns its ranks)
//   mpirun -n 8 -x ELMO_JOB_TOKEN elmo_fast train --root_uri host-a --root_port 9091 ...
//
// Launchers re-execute the program (by default /proc/self/exe) with the launch flags removed
// (strip_launch_flags) and ELMO_RANK, ELMO_WORLD_SIZE, ... set; the child then plans kRank.
// What it is not: a job scheduler (no retries, no elastic membership): the first rank that fails
// stops the job, and --resume continues from the last checkpoint.
//
// How a program uses it (exit codes: a role's return value; UsageError -> 2, other errors -> 1):
//
//   ProcessPlan plan = plan_process(options, current_environment(), cuda_device_count());
//   std::vector<std::string> child = strip_launch_flags(original_argv);
//   switch (plan.kind) {
//     case ProcessKind::kLocalLauncher:  return run_local_launcher(plan, child);
//     case ProcessKind::kScheduler:      return run_scheduler(plan);
//     case ProcessKind::kNodeSupervisor: return run_node_supervisor(plan, child);
//     case ProcessKind::kSingle: case ProcessKind::kRank: break;  // train below
//   }
//   std::atomic<bool> peer_lost{false};
//   auto session = RankSession::join(plan, [&](const PeerLost&) { peer_lost = true; });
//   // nullptr for kSingle; else: session->store() is the KvStore for the collectives, e.g.
//   auto allreduce = make_gloo_allreduce(session->store(), session->topology(),
//                                        session->local_address(), plan.timeout_s);
//   ... train; on an error: session->store().report_fault(what) (best effort), exit 1 ...
//   session->finish();  // clean end: without it the other ranks see this rank as lost
//
// Sources: launch_plan.cpp (planning, argv and environment), launch_supervise.cpp (the launcher
// roles and their child processes), rank_session.cpp (RankSession).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "comm/rendezvous.h"
#include "comm/topology.h"

namespace elmo {

// What the app read from its command line (flag names in comments).
struct LaunchOptions {
  int nodes = 0;             // --nodes: nodes simulated on this machine (local launcher)
  int workers_per_node = 0;  // --workers_per_node: ranks per node (0: 1, or one per --device_ids)
  std::string role;          // --role: "scheduler" | "worker" ("server" = worker, as lapse-elmo)
  std::string root_uri;      // --root_uri: host of the rendezvous (the scheduler, or rank 0)
  int root_port = 0;         // --root_port
  int world_size = 0;        // --world_size: number of NODES in a cluster job
  int rank = -1;             // --rank: node index of a --role worker (-1: order of joining)
  std::vector<int> device_ids;  // --device_ids: CUDA device of each process on this machine
  bool no_cuda = false;         // --no_cuda
  std::string host_map;         // --host_map: JSON {"host-a": 4, "host-b": 2} or a file holding it
  std::string job_token;        // --job_token (else ELMO_JOB_TOKEN)
  double timeout_s = 120;       // --dist_timeout: joining, rendezvous waits, collectives
};

enum class ProcessKind {
  kSingle,          // no distribution: rank 0 of world 1
  kLocalLauncher,   // spawns nodes x workers_per_node ranks on this machine, serves the store
  kScheduler,       // serves the store of a cluster job, assigns ranks to nodes, waits
  kNodeSupervisor,  // one per node of a cluster job: joins the scheduler, spawns its ranks
  kRank,            // a rank process (spawned by a launcher, or by mpirun/srun/torchrun)
};
const char* process_kind_name(ProcessKind kind);

struct ProcessPlan {
  ProcessKind kind = ProcessKind::kSingle;
  std::string source;  // what decided it, for logs: "--nodes/--workers_per_node", "srun", ...
  Topology topology;   // kRank: this rank; kSingle: rank 0 of 1
  int device_id = -1;  // kRank/kSingle: CUDA device of this process, -1 = CPU
  int nodes = 1;       // kLocalLauncher: nodes on this machine; kScheduler: nodes to wait for;
                       // kNodeSupervisor: --world_size, or 0 when it learns it from the scheduler
  int workers_per_node = 1;        // kLocalLauncher/kNodeSupervisor: ranks of each node here
  std::vector<int> local_devices;  // kLocalLauncher/kNodeSupervisor: device of each rank spawned
                                   // here, in spawn order (-1 = CPU)
  int node_rank = -1;              // kNodeSupervisor: --rank (-1: order of joining)
  std::string root_host;     // where ranks (and nodes) connect; kScheduler: "0.0.0.0" or --root_uri
  int root_port = 0;         // kLocalLauncher: 0 (a free port is picked at launch)
  std::string job_token;     // "" only for kSingle and kLocalLauncher (which makes a random one)
  bool serve_store = false;  // kRank: this process serves the store (rank 0 under mpirun/srun/env)
  double timeout_s = 120;
};

// Decides the plan. Pure: the environment, the number of visible CUDA devices and this machine's
// hostname (used only with --host_map; "" = look it up) are passed in. Precedence: ELMO_RANK
// (our own children) > explicit launch flags (--nodes, --workers_per_node, --role, --world_size,
// --host_map) > mpirun > srun > RANK/WORLD_SIZE > --root_uri alone (a worker) > single process.
// Throws UsageError naming the flag or variable for anything inconsistent.
ProcessPlan plan_process(const LaunchOptions& options,
                         const std::map<std::string, std::string>& env, int cuda_devices,
                         const std::string& hostname = "");

// The argv of a spawned rank: `argv` without the launch flags (--nodes, --workers_per_node,
// --role, --root_uri, --root_port, --world_size, --rank, --device_ids (several values),
// --host_map, --job_token), in both `--flag value` and `--flag=value` forms; --device_ids takes
// the device numbers that follow it ("0 1" or "0,1"). Everything after "--" is kept as is.
std::vector<std::string> strip_launch_flags(const std::vector<std::string>& argv);

// How launchers start and stop their children.
struct SpawnOptions {
  std::string executable = "/proc/self/exe";  // what every child executes (argv[0] is kept)
  double grace_s = 10.0;                      // SIGTERM -> SIGKILL delay when stopping children
  bool forward_signals = true;  // pass SIGINT/SIGTERM received by this process to the children
                                // (installs handlers for the duration; off for in-process tests)
};

// kLocalLauncher: serves the store on 127.0.0.1 (a free port), spawns nodes x workers_per_node
// children with ELMO_* set, and waits. Returns 0 when every child exited 0, else the exit code of
// the first child that failed (128 + signal when killed); the others are stopped (SIGTERM, then
// SIGKILL after grace_s). Children die with the launcher (PR_SET_PDEATHSIG; it is the calling
// thread that must stay alive).
int run_local_launcher(const ProcessPlan& plan, const std::vector<std::string>& child_argv,
                       const SpawnOptions& spawn = {});

// kScheduler: serves the store on 0.0.0.0:root_port, waits (timeout_s) for `nodes` node
// supervisors, gives node i the ranks base_i .. base_i + workers_i - 1 (nodes in join order, or by
// --rank), waits (timeout_s) for every rank to join, then until all ranks leave cleanly (returns
// 0) or a fault is recorded (logs it, returns 1). Logs where to point the workers.
int run_scheduler(const ProcessPlan& plan);

// kNodeSupervisor: joins the scheduler's store, registers its workers, learns its rank base and
// the world, spawns its ranks like the local launcher and returns the first failure's code (after
// reporting it to the scheduler), or 0.
int run_node_supervisor(const ProcessPlan& plan, const std::vector<std::string>& child_argv,
                        const SpawnOptions& spawn = {});

// A rank's membership in its job: the store connection (and the store itself when this rank
// serves it), the fault monitor, and the address peers use to reach this process.
class RankSession {
 public:
  // For kRank: serves the store when plan.serve_store, connects to it, publishes this rank
  // under "rank/<r>", waits (timeout_s) until every rank has (CommError naming the missing ones)
  // and starts the monitor with on_fault. Sets the log/error context to "rank r/N". For kSingle
  // there is nothing to join: returns nullptr.
  static std::unique_ptr<RankSession> join(const ProcessPlan& plan,
                                           std::function<void(const PeerLost&)> on_fault);
  ~RankSession();  // without finish(): the other ranks see this rank as lost

  KvClient& store() { return *client_; }
  const Topology& topology() const { return topology_; }
  // This machine's address as seen from the rendezvous host (Gloo/UCX listen on it).
  const std::string& local_address() const { return local_address_; }
  // Clean end: leave() the store; when this rank serves the store, keep serving until every rank
  // has left (at most timeout_s) so that the others can finish.
  void finish();

 private:
  RankSession() = default;
  Topology topology_;
  double timeout_s_ = 120;
  std::string local_address_;
  std::unique_ptr<KvServer> server_;
  std::unique_ptr<KvClient> client_;
};

// This process's environment as a map (for plan_process) and the machine's hostname.
std::map<std::string, std::string> current_environment();
std::string local_hostname();

}  // namespace elmo
