// Distributed training on a GPU rank end to end (label gpu): one rank launched with
// `--nodes 1 --workers_per_node 1` trains on cuda:0 through the GPU-rank path of
// app/data_parallel (NCCL bucket on a one-rank communicator, host working copies of the tables,
// fetched-row uploads, owned-row downloads, sharded checkpoint) and ends where a single-process
// GPU run ends. One GPU cannot host two NCCL ranks, so more ranks need more GPUs; the test also
// checks that two ranks sharing one GPU fall back to the CPU under train.device = "auto".
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "io/atomic_file.h"
#include "io/checkpoint.h"
#include "runtime/cuda_memory.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

namespace fs = std::filesystem;
using testing::run_elmo;

std::string config_text(const std::string& run_dir, const std::string& device) {
  return "[run]\ndir = \"" + run_dir +
         "\"\nseed = 5\n"
         "[synthetic]\nvocab_size = 150\nclasses = 4\ntrain_sentences = 3000\n"
         "valid_sentences = 60\n"
         "[model]\nembedding_dim = 16\ncell_size = 32\nprojection_dim = 16\nlayers = 2\n"
         "dropout = 0.1\ncell_clip = 3\nproj_clip = 3\n"
         "[softmax]\ntype = \"sampled\"\nsamples = 40\n"
         "[train]\nbatch_size = 8\nunroll_steps = 10\nthreads = 2\nlog_every = 2\n"
         "max_steps = 6\ndevice = \"" +
         device +
         "\"\n"
         "[checkpoint]\nevery_steps = 3\nkeep_last = 0\n"
         "[eval]\nbatch_size = 4\nmax_tokens = 300\n"
         "[dist]\ntimeout_seconds = 30\nhot_coverage = 0.5\n";
}

std::string write_config(const std::string& dir, const std::string& text) {
  fs::create_directories(dir);
  write_file_atomic(dir + "/run.toml", text);
  return dir + "/run.toml";
}

// Tolerance 1e-5 (absolute and relative), as for the CPU ranks: the one-rank path adds the
// same gradients, but the gradient norm is summed in another order (device bucket + owned
// rows vs. the optimizer's registry walk), which can move the clip factor by a rounding.
TEST(TrainDistGpu, OneGpuRankMatchesTheSingleProcessGpuRun) {
  ELMO_SKIP_WITHOUT_GPU();
  const std::string dir = testing::temp_dir("train_dist_gpu");
  const auto single =
      run_elmo("--config " + write_config(dir + "/s", config_text(dir + "/s/run", "cuda")));
  ASSERT_EQ(single.status, 0) << single.output;
  const auto ranked =
      run_elmo("--config " + write_config(dir + "/d", config_text(dir + "/d/run", "cuda")) +
               " --nodes 1 --workers_per_node 1");
  ASSERT_EQ(ranked.status, 0) << ranked.output;
  EXPECT_NE(ranked.output.find("device: cuda:0"), std::string::npos) << ranked.output;
  EXPECT_NE(ranked.output.find("NCCL on cuda:0"), std::string::npos) << ranked.output;
  const auto summary = nlohmann::json::parse(read_file(dir + "/d/run/summary.json"));
  EXPECT_EQ(summary["device"], "cuda:0");
  EXPECT_EQ(summary["world_size"], 1);

  const CheckpointData a = load_checkpoint(dir + "/s/run");
  const CheckpointData b = load_checkpoint(dir + "/d/run");
  EXPECT_EQ(a.step, 6);
  EXPECT_EQ(b.step, 6);
  for (const char* file : {"model", "optimizer", "carry"}) {
    const NamedTensors* x = a.file(file);
    const NamedTensors* y = b.file(file);
    ASSERT_TRUE(x && y) << file;
    ASSERT_EQ(x->size(), y->size()) << file;
    for (size_t i = 0; i < x->size(); ++i) {
      const auto& [name, tensor] = (*x)[i];
      const auto found = std::find_if(y->begin(), y->end(),
                                      [&](const auto& named) { return named.first == name; });
      ASSERT_NE(found, y->end()) << file << "/" << name << " missing from the distributed run";
      EXPECT_TRUE(testing::all_close(found->second.to_floats(), tensor.to_floats(), 1e-5f, 1e-5f))
          << file << "/" << name;
    }
  }
}

TEST(TrainDistGpu, TwoRanksOnOneGpuFallBackToCpuUnderAuto) {
  ELMO_SKIP_WITHOUT_GPU();
  if (cuda_device_count() > 1) GTEST_SKIP() << "two GPUs: the ranks get one each";
  const std::string dir = testing::temp_dir("train_dist_gpu_shared");
  const auto r = run_elmo("--config " + write_config(dir, config_text(dir + "/run", "auto")) +
                          " --nodes 2 --workers_per_node 1 --set train.max_steps=2");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("would share cuda:0"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("device: cpu"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace elmo
