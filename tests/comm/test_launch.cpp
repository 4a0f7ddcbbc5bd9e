// plan_process for every launch style (flags, our own ELMO_* children, mpirun, srun,
// RANK/WORLD_SIZE) and its errors, and strip_launch_flags. All pure: no process is started.
#include <gtest/gtest.h>

#include "comm/launch.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

using Env = std::map<std::string, std::string>;
using testing::error_of;

std::string usage_error_of(const LaunchOptions& o, const Env& env = {}, int gpus = 0,
                           const std::string& host = "host-a") {
  try {
    plan_process(o, env, gpus, host);
  } catch (const UsageError& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("not a UsageError: ") + e.what();
  }
  return "";
}

#define EXPECT_CONTAINS(text, part)                      \
  do {                                                   \
    const std::string text_ = (text);                    \
    EXPECT_NE(text_.find(part), std::string::npos)       \
        << "'" << text_ << "' lacks '" << (part) << "'"; \
  } while (0)

TEST(LaunchPlan, NoFlagsIsASingleProcess) {
  ProcessPlan plan = plan_process({}, {}, 0, "h");
  EXPECT_EQ(plan.kind, ProcessKind::kSingle);
  EXPECT_EQ(plan.topology.world_size, 1);
  EXPECT_EQ(plan.device_id, -1);
  EXPECT_EQ(plan_process({}, {}, 2, "h").device_id, 0);
  LaunchOptions no_cuda;
  no_cuda.no_cuda = true;
  EXPECT_EQ(plan_process(no_cuda, {}, 2, "h").device_id, -1);
  LaunchOptions one_device;
  one_device.device_ids = {1};
  EXPECT_EQ(plan_process(one_device, {}, 2, "h").device_id, 1);
  one_device.device_ids = {3};
  EXPECT_CONTAINS(usage_error_of(one_device, {}, 2),
                  "--device_ids names device 3 but this machine has 2 GPU(s)");
  EXPECT_CONTAINS(usage_error_of(one_device, {}, 0), "--device_ids names CUDA devices but none");
  // A token in the environment alone changes nothing.
  EXPECT_EQ(plan_process({}, {{"ELMO_JOB_TOKEN", "t"}}, 0, "h").kind, ProcessKind::kSingle);
}

TEST(LaunchPlan, NodesAndWorkersMakeALocalLauncher) {
  LaunchOptions o;
  o.nodes = 2;
  o.workers_per_node = 2;
  ProcessPlan plan = plan_process(o, {}, 4, "h");
  EXPECT_EQ(plan.kind, ProcessKind::kLocalLauncher);
  EXPECT_EQ(plan.nodes, 2);
  EXPECT_EQ(plan.workers_per_node, 2);
  EXPECT_EQ(plan.local_devices, (std::vector<int>{0, 1, 2, 3}));
  EXPECT_EQ(plan.root_host, "127.0.0.1");
  EXPECT_EQ(plan.job_token, "");  // the launcher makes a random one
  EXPECT_EQ(plan_process(o, {}, 3, "h").local_devices, (std::vector<int>{0, 1, 2, 0}));
  EXPECT_EQ(plan_process(o, {}, 0, "h").local_devices, (std::vector<int>{-1, -1, -1, -1}));
  o.device_ids = {3, 2, 1, 0};
  EXPECT_EQ(plan_process(o, {}, 4, "h").local_devices, (std::vector<int>{3, 2, 1, 0}));
  o.device_ids = {0, 1};
  EXPECT_CONTAINS(usage_error_of(o, {}, 4),
                  "--device_ids names 2 device(s) but this machine runs 4 rank(s)");
  o.device_ids.clear();
  o.job_token = "given";
  EXPECT_EQ(plan_process(o, {}, 0, "h").job_token, "given");

  LaunchOptions workers_only;
  workers_only.workers_per_node = 3;
  plan = plan_process(workers_only, {}, 0, "h");
  EXPECT_EQ(plan.kind, ProcessKind::kLocalLauncher);
  EXPECT_EQ(plan.nodes, 1);
  EXPECT_EQ(plan.workers_per_node, 3);

  LaunchOptions devices_only;  // one rank per listed GPU
  devices_only.device_ids = {0, 1};
  plan = plan_process(devices_only, {}, 2, "h");
  EXPECT_EQ(plan.kind, ProcessKind::kLocalLauncher);
  EXPECT_EQ(plan.workers_per_node, 2);
  EXPECT_EQ(plan.local_devices, (std::vector<int>{0, 1}));

  LaunchOptions with_map = o;
  with_map.host_map = "{\"h\": 2}";
  EXPECT_CONTAINS(usage_error_of(with_map), "--host_map applies to the nodes of a cluster job");
}

TEST(LaunchPlan, Scheduler) {
  LaunchOptions o;
  o.role = "scheduler";
  o.root_port = 9091;
  o.world_size = 3;
  o.job_token = "secret";
  ProcessPlan plan = plan_process(o, {}, 0, "h");
  EXPECT_EQ(plan.kind, ProcessKind::kScheduler);
  EXPECT_EQ(plan.nodes, 3);
  EXPECT_EQ(plan.root_port, 9091);
  EXPECT_EQ(plan.job_token, "secret");
  // Worker-only flags on the same command line are ignored by the scheduler.
  LaunchOptions same_line = o;
  same_line.workers_per_node = 4;
  same_line.device_ids = {0, 1, 2, 3};
  EXPECT_EQ(plan_process(same_line, {}, 0, "h").kind, ProcessKind::kScheduler);

  LaunchOptions from_env = o;
  from_env.job_token.clear();
  EXPECT_EQ(plan_process(from_env, {{"ELMO_JOB_TOKEN", "env-secret"}}, 0, "h").job_token,
            "env-secret");
  const std::string no_token = usage_error_of(from_env);
  EXPECT_CONTAINS(no_token, "--role scheduler needs a job token");
  EXPECT_CONTAINS(no_token, "--job_token TOKEN or set ELMO_JOB_TOKEN");

  LaunchOptions no_world = o;
  no_world.world_size = 0;
  EXPECT_CONTAINS(usage_error_of(no_world), "--role scheduler needs --world_size");
  LaunchOptions no_port = o;
  no_port.root_port = 0;
  EXPECT_CONTAINS(usage_error_of(no_port), "--role scheduler needs --root_port");
  LaunchOptions with_nodes = o;
  with_nodes.nodes = 2;
  EXPECT_CONTAINS(usage_error_of(with_nodes), "--nodes runs several nodes on one machine");
}

TEST(LaunchPlan, WorkerNode) {
  LaunchOptions o;
  o.role = "worker";
  o.root_uri = "host-s";
  o.root_port = 9091;
  o.workers_per_node = 2;
  o.job_token = "secret";
  ProcessPlan plan = plan_process(o, {}, 2, "host-a");
  EXPECT_EQ(plan.kind, ProcessKind::kNodeSupervisor);
  EXPECT_EQ(plan.workers_per_node, 2);
  EXPECT_EQ(plan.local_devices, (std::vector<int>{0, 1}));
  EXPECT_EQ(plan.root_host, "host-s");
  EXPECT_EQ(plan.nodes, 0);  // learned from the scheduler
  EXPECT_EQ(plan.node_rank, -1);

  LaunchOptions lapse_name = o;  // lapse-elmo calls it "server"
  lapse_name.role = "server";
  EXPECT_EQ(plan_process(lapse_name, {}, 2, "host-a").kind, ProcessKind::kNodeSupervisor);

  LaunchOptions uri_only;  // --root_uri without --role: a node too
  uri_only.root_uri = "host-s";
  uri_only.root_port = 9091;
  uri_only.world_size = 2;
  uri_only.rank = 1;
  plan = plan_process(uri_only, {{"ELMO_JOB_TOKEN", "t"}}, 0, "host-a");
  EXPECT_EQ(plan.kind, ProcessKind::kNodeSupervisor);
  EXPECT_EQ(plan.workers_per_node, 1);
  EXPECT_EQ(plan.local_devices, (std::vector<int>{-1}));
  EXPECT_EQ(plan.nodes, 2);
  EXPECT_EQ(plan.node_rank, 1);
  uri_only.rank = 2;
  EXPECT_CONTAINS(usage_error_of(uri_only, {{"ELMO_JOB_TOKEN", "t"}}),
                  "--rank 2 is not a node index below --world_size 2");

  LaunchOptions no_uri = o;
  no_uri.root_uri.clear();
  EXPECT_CONTAINS(usage_error_of(no_uri),
                  "--role worker starts a node of a cluster job and needs "
                  "--root_uri");
  LaunchOptions world_only;
  world_only.world_size = 2;
  EXPECT_CONTAINS(usage_error_of(world_only), "--world_size starts a node of a cluster job");
  LaunchOptions no_port = o;
  no_port.root_port = 0;
  EXPECT_CONTAINS(usage_error_of(no_port), "--role worker needs --root_port");
  LaunchOptions no_token = o;
  no_token.job_token.clear();
  EXPECT_CONTAINS(usage_error_of(no_token), "--role worker needs a job token");
  LaunchOptions nodes = o;
  nodes.nodes = 2;
  EXPECT_CONTAINS(usage_error_of(nodes), "start one --role worker per node");
  LaunchOptions short_devices = o;
  short_devices.device_ids = {0};
  EXPECT_CONTAINS(usage_error_of(short_devices, {}, 2),
                  "--device_ids names 1 device(s) but this machine runs 2 rank(s)");
  LaunchOptions by_devices = o;  // workers default to one per listed device
  by_devices.workers_per_node = 0;
  by_devices.device_ids = {1, 0};
  plan = plan_process(by_devices, {}, 2, "host-a");
  EXPECT_EQ(plan.workers_per_node, 2);
  EXPECT_EQ(plan.local_devices, (std::vector<int>{1, 0}));
}

TEST(LaunchPlan, HostMapGivesTheWorkersOfThisNode) {
  LaunchOptions o;
  o.role = "worker";
  o.root_uri = "host-s";
  o.root_port = 9091;
  o.job_token = "secret";
  o.host_map = R"({"host-a": 4, "host-b": 2})";
  EXPECT_EQ(plan_process(o, {}, 0, "host-b").workers_per_node, 2);
  EXPECT_EQ(plan_process(o, {}, 0, "host-a.cluster.example").workers_per_node, 4);
  EXPECT_EQ(usage_error_of(o, {}, 0, "host-c"),
            "--host_map has no entry for this machine 'host-c' (it lists: host-a, host-b)");
  const std::string file =
      testing::write_text_file(testing::temp_dir("host_map"), "hosts.json", R"({"host-c": 3})");
  LaunchOptions from_file = o;
  from_file.host_map = file;
  EXPECT_EQ(plan_process(from_file, {}, 0, "host-c").workers_per_node, 3);
  LaunchOptions both = o;
  both.workers_per_node = 2;
  EXPECT_CONTAINS(usage_error_of(both, {}, 0, "host-a"),
                  "--host_map and --workers_per_node both give the workers");
  LaunchOptions broken = o;
  broken.host_map = "{\"host-a\": ";
  EXPECT_CONTAINS(usage_error_of(broken), "--host_map is not valid JSON");
  broken.host_map = R"({"host-a": 0})";
  EXPECT_CONTAINS(usage_error_of(broken), "--host_map entry \"host-a\" must be a worker count");
  broken.host_map = "/no/such/file.json";
  EXPECT_CONTAINS(usage_error_of(broken), "neither a JSON object nor a readable file");
}

Env child_env() {
  return {{"ELMO_RANK", "5"},          {"ELMO_WORLD_SIZE", "6"},   {"ELMO_LOCAL_RANK", "1"},
          {"ELMO_LOCAL_SIZE", "2"},    {"ELMO_NODE", "2"},         {"ELMO_NODES", "3"},
          {"ELMO_ROOT_URI", "host-s"}, {"ELMO_ROOT_PORT", "9091"}, {"ELMO_JOB_TOKEN", "tok"},
          {"ELMO_DEVICE_ID", "1"}};
}

TEST(LaunchPlan, OurOwnChildrenReadElmoVariables) {
  ProcessPlan plan = plan_process({}, child_env(), 2, "h");
  EXPECT_EQ(plan.kind, ProcessKind::kRank);
  EXPECT_EQ(plan.topology.rank, 5);
  EXPECT_EQ(plan.topology.world_size, 6);
  EXPECT_EQ(plan.topology.local_rank, 1);
  EXPECT_EQ(plan.topology.local_size, 2);
  EXPECT_EQ(plan.topology.node, 2);
  EXPECT_EQ(plan.nodes, 3);
  EXPECT_EQ(plan.root_host, "host-s");
  EXPECT_EQ(plan.root_port, 9091);
  EXPECT_EQ(plan.job_token, "tok");
  EXPECT_EQ(plan.device_id, 1);
  EXPECT_FALSE(plan.serve_store);

  Env cpu = child_env();
  cpu["ELMO_DEVICE_ID"] = "-1";
  EXPECT_EQ(plan_process({}, cpu, 2, "h").device_id, -1);
  Env derived = child_env();
  derived.erase("ELMO_DEVICE_ID");
  EXPECT_EQ(plan_process({}, derived, 2, "h").device_id, 1);  // local rank 1

  Env bad = child_env();
  bad["ELMO_RANK"] = "five";
  EXPECT_EQ(usage_error_of({}, bad), "ELMO_RANK='five' is not an integer");
  bad = child_env();
  bad["ELMO_RANK"] = "6";
  EXPECT_CONTAINS(usage_error_of({}, bad), "ELMO_RANK=6 is not a rank of ELMO_WORLD_SIZE=6");
  bad = child_env();
  bad.erase("ELMO_ROOT_PORT");
  EXPECT_CONTAINS(usage_error_of({}, bad), "ELMO_ROOT_PORT is not set");
  bad = child_env();
  bad["ELMO_DEVICE_ID"] = "4";
  EXPECT_CONTAINS(usage_error_of({}, bad, 2), "ELMO_DEVICE_ID=4 is not a device of this machine");
  LaunchOptions relaunch;
  relaunch.nodes = 2;
  EXPECT_CONTAINS(usage_error_of(relaunch, child_env()),
                  "--nodes must not be given to a rank started by an elmo_fast launcher");
}

Env mpirun_env(int rank) {
  return {{"OMPI_COMM_WORLD_RANK", std::to_string(rank)},
          {"OMPI_COMM_WORLD_SIZE", "8"},
          {"OMPI_COMM_WORLD_LOCAL_RANK", std::to_string(rank % 4)},
          {"OMPI_COMM_WORLD_LOCAL_SIZE", "4"}};
}

TEST(LaunchPlan, Mpirun) {
  LaunchOptions o;
  o.root_uri = "host-a";
  o.root_port = 29500;
  o.job_token = "tok";
  ProcessPlan plan = plan_process(o, mpirun_env(5), 4, "h");
  EXPECT_EQ(plan.kind, ProcessKind::kRank);
  EXPECT_EQ(plan.topology.rank, 5);
  EXPECT_EQ(plan.topology.world_size, 8);
  EXPECT_EQ(plan.topology.local_rank, 1);
  EXPECT_EQ(plan.topology.local_size, 4);
  EXPECT_EQ(plan.topology.node, 1);
  EXPECT_EQ(plan.nodes, 2);
  EXPECT_EQ(plan.device_id, 1);
  EXPECT_FALSE(plan.serve_store);
  EXPECT_EQ(plan.root_host, "host-a");
  EXPECT_TRUE(plan_process(o, mpirun_env(0), 4, "h").serve_store);
  o.device_ids = {3, 2, 1, 0};
  EXPECT_EQ(plan_process(o, mpirun_env(5), 4, "h").device_id, 2);
  o.device_ids.clear();

  LaunchOptions no_root = o;
  no_root.root_uri.clear();
  const std::string missing_root = usage_error_of(no_root, mpirun_env(1));
  EXPECT_CONTAINS(missing_root,
                  "ranks started by mpirun (OMPI_COMM_WORLD_*) need the rendezvous "
                  "address: pass --root_uri HOST --root_port PORT");
  EXPECT_CONTAINS(missing_root, "MASTER_ADDR");
  Env with_master = mpirun_env(1);
  with_master["MASTER_ADDR"] = "host-m";
  with_master["MASTER_PORT"] = "1234";
  no_root.root_port = 0;
  plan = plan_process(no_root, with_master, 0, "h");
  EXPECT_EQ(plan.root_host, "host-m");
  EXPECT_EQ(plan.root_port, 1234);

  LaunchOptions no_token = o;
  no_token.job_token.clear();
  EXPECT_CONTAINS(usage_error_of(no_token, mpirun_env(1)), "with mpirun add -x ELMO_JOB_TOKEN");
  Env token_env = mpirun_env(1);
  token_env["ELMO_JOB_TOKEN"] = "from-env";
  EXPECT_EQ(plan_process(no_token, token_env, 0, "h").job_token, "from-env");

  LaunchOptions launcher_too = o;
  launcher_too.workers_per_node = 2;
  EXPECT_CONTAINS(usage_error_of(launcher_too, mpirun_env(1)),
                  "--workers_per_node starts ranks by itself and must not be used under mpirun");

  Env alone = {{"OMPI_COMM_WORLD_RANK", "0"}, {"OMPI_COMM_WORLD_SIZE", "1"}};
  EXPECT_EQ(plan_process({}, alone, 0, "h").kind, ProcessKind::kSingle);  // no token needed
  Env broken = mpirun_env(9);
  EXPECT_CONTAINS(usage_error_of(o, broken), "rank 9 is not a rank of world 8");
}

TEST(LaunchPlan, Srun) {
  LaunchOptions o;
  o.root_uri = "node0";
  o.root_port = 29500;
  o.job_token = "tok";
  Env env = {{"SLURM_PROCID", "3"}, {"SLURM_NTASKS", "4"}, {"SLURM_LOCALID", "1"},
             {"SLURM_NODEID", "1"}, {"SLURM_NNODES", "2"}, {"SLURM_TASKS_PER_NODE", "2(x2)"}};
  ProcessPlan plan = plan_process(o, env, 2, "h");
  EXPECT_EQ(plan.kind, ProcessKind::kRank);
  EXPECT_EQ(plan.source, "srun (SLURM_*)");
  EXPECT_EQ(plan.topology.rank, 3);
  EXPECT_EQ(plan.topology.world_size, 4);
  EXPECT_EQ(plan.topology.local_rank, 1);
  EXPECT_EQ(plan.topology.local_size, 2);
  EXPECT_EQ(plan.topology.node, 1);
  EXPECT_EQ(plan.nodes, 2);
  EXPECT_EQ(plan.device_id, 1);
  // Uneven tasks per node: "3,1" gives node 1 one task.
  Env uneven = {{"SLURM_PROCID", "3"}, {"SLURM_NTASKS", "4"}, {"SLURM_LOCALID", "0"},
                {"SLURM_NODEID", "1"}, {"SLURM_NNODES", "2"}, {"SLURM_TASKS_PER_NODE", "3,1"}};
  plan = plan_process(o, uneven, 0, "h");
  EXPECT_EQ(plan.topology.local_size, 1);
  Env explicit_per_node = env;
  explicit_per_node["SLURM_NTASKS_PER_NODE"] = "2";
  EXPECT_EQ(plan_process(o, explicit_per_node, 0, "h").topology.local_size, 2);
  Env garbled = env;
  garbled["SLURM_NODEID"] = "x";
  EXPECT_EQ(usage_error_of(o, garbled), "SLURM_NODEID='x' is not an integer");
  // Explicit launch flags win over a batch script's SLURM variables.
  LaunchOptions local;
  local.nodes = 2;
  EXPECT_EQ(plan_process(local, env, 0, "h").kind, ProcessKind::kLocalLauncher);
}

TEST(LaunchPlan, RankAndWorldSizeVariables) {
  Env env = {{"RANK", "2"},
             {"WORLD_SIZE", "4"},
             {"LOCAL_RANK", "0"},
             {"LOCAL_WORLD_SIZE", "2"},
             {"MASTER_ADDR", "10.0.0.1"},
             {"MASTER_PORT", "29500"},
             {"ELMO_JOB_TOKEN", "tok"}};
  ProcessPlan plan = plan_process({}, env, 0, "h");
  EXPECT_EQ(plan.kind, ProcessKind::kRank);
  EXPECT_EQ(plan.topology.rank, 2);
  EXPECT_EQ(plan.topology.node, 1);
  EXPECT_EQ(plan.nodes, 2);
  EXPECT_EQ(plan.root_host, "10.0.0.1");
  EXPECT_EQ(plan.root_port, 29500);
  EXPECT_FALSE(plan.serve_store);
  LaunchOptions override_root;
  override_root.root_uri = "10.0.0.9";
  override_root.root_port = 4000;
  plan = plan_process(override_root, env, 0, "h");
  EXPECT_EQ(plan.root_host, "10.0.0.9");
  EXPECT_EQ(plan.root_port, 4000);
  Env no_master = env;
  no_master.erase("MASTER_ADDR");
  EXPECT_CONTAINS(usage_error_of({}, no_master),
                  "ranks started by RANK/WORLD_SIZE variables need the rendezvous address");
  Env bad_port = env;
  bad_port["MASTER_PORT"] = "99999";
  EXPECT_CONTAINS(usage_error_of({}, bad_port), "MASTER_PORT=99999 is out of range");
}

TEST(LaunchPlan, FlagValidationNamesTheFlag) {
  auto with = [](auto&& edit) {
    LaunchOptions o;
    edit(o);
    return usage_error_of(o);
  };
  EXPECT_CONTAINS(with([](LaunchOptions& o) { o.nodes = -1; }), "--nodes must be >= 1 (got -1)");
  EXPECT_CONTAINS(with([](LaunchOptions& o) { o.workers_per_node = -2; }), "--workers_per_node");
  EXPECT_CONTAINS(with([](LaunchOptions& o) { o.world_size = -1; }), "--world_size");
  EXPECT_CONTAINS(with([](LaunchOptions& o) { o.root_port = 70000; }),
                  "--root_port 70000 is out of range 1..65535");
  EXPECT_CONTAINS(with([](LaunchOptions& o) { o.timeout_s = 0; }), "--dist_timeout must be > 0");
  EXPECT_CONTAINS(with([](LaunchOptions& o) { o.role = "boss"; }),
                  "--role must be scheduler or worker (got 'boss')");
  EXPECT_CONTAINS(with([](LaunchOptions& o) {
                    o.device_ids = {0, -1};
                  }),
                  "--device_ids: device -1 is negative");
  EXPECT_CONTAINS(with([](LaunchOptions& o) {
                    o.device_ids = {0};
                    o.no_cuda = true;
                  }),
                  "--device_ids and --no_cuda contradict each other");
  EXPECT_CONTAINS(with([](LaunchOptions& o) { o.root_port = 9091; }),
                  "--root_port alone starts nothing");
  EXPECT_CONTAINS(with([](LaunchOptions& o) { o.rank = 1; }), "--rank applies to --role worker");
}

TEST(LaunchPlan, StripLaunchFlags) {
  const std::vector<std::string> argv = {"elmo_fast",
                                         "train",
                                         "--nodes",
                                         "2",
                                         "--workers_per_node=3",
                                         "--config",
                                         "run.toml",
                                         "--role",
                                         "worker",
                                         "--root_uri=host-a",
                                         "--root_port",
                                         "9091",
                                         "--world_size",
                                         "2",
                                         "--device_ids",
                                         "0",
                                         "1",
                                         "2",
                                         "--no_cuda",
                                         "--host_map",
                                         "{\"a\":1}",
                                         "--job_token",
                                         "t",
                                         "--rank",
                                         "1",
                                         "--set",
                                         "train.lr=0.1",
                                         "--device_ids=3",
                                         "--dist_timeout",
                                         "30",
                                         "--",
                                         "--nodes",
                                         "kept"};
  EXPECT_EQ(
      strip_launch_flags(argv),
      (std::vector<std::string>{"elmo_fast", "train", "--config", "run.toml", "--no_cuda", "--set",
                                "train.lr=0.1", "--dist_timeout", "30", "--", "--nodes", "kept"}));
  EXPECT_EQ(strip_launch_flags({"elmo_fast"}), (std::vector<std::string>{"elmo_fast"}));
  // A flag at the very end without its value is dropped alone.
  EXPECT_EQ(strip_launch_flags({"elmo_fast", "train", "--nodes"}),
            (std::vector<std::string>{"elmo_fast", "train"}));
  // --device_ids takes device numbers only: it stops at the next flag or argument.
  EXPECT_EQ(strip_launch_flags({"x", "--device_ids", "0", "1", "--steps", "5"}),
            (std::vector<std::string>{"x", "--steps", "5"}));
  EXPECT_EQ(strip_launch_flags({"x", "--device_ids", "0,1", "run.toml"}),
            (std::vector<std::string>{"x", "run.toml"}));
  // Names that merely start like a launch flag are kept.
  EXPECT_EQ(strip_launch_flags({"x", "--nodes_file", "f", "--roles", "r"}),
            (std::vector<std::string>{"x", "--nodes_file", "f", "--roles", "r"}));
}

TEST(LaunchPlan, KindNames) {
  EXPECT_STREQ(process_kind_name(ProcessKind::kScheduler), "scheduler");
  EXPECT_STREQ(process_kind_name(ProcessKind::kRank), "rank");
  EXPECT_EQ(RankSession::join(plan_process({}, {}, 0, "h"), nullptr), nullptr);
}

}  // namespace
}  // namespace elmo
