// `elmo_fast train --device cuda` end to end on a tiny model: it trains, checkpoints (host
// safetensors), reports peak device memory in the log and summary.json, resumes bit-identically
// on the GPU (every GPU reduction has a fixed order), and its checkpoint evaluates on the CPU.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "io/atomic_file.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

namespace fs = std::filesystem;
using testing::run_elmo;

std::string tiny_config(const std::string& run_dir) {
  return "[run]\ndir = \"" + run_dir + "\"\nseed = 5\n"
         "[synthetic]\nvocab_size = 150\nclasses = 4\ntrain_sentences = 3000\n"
         "valid_sentences = 100\n"
         "[model]\nembedding_dim = 16\ncell_size = 32\nprojection_dim = 16\nlayers = 2\n"
         "dropout = 0.1\ncell_clip = 0.5\nproj_clip = 0.5\n"
         "[softmax]\ntype = \"sampled\"\nsamples = 40\n"
         "[train]\nbatch_size = 8\nunroll_steps = 10\nmax_steps = 12\nthreads = 2\n"
         "log_every = 3\ndevice = \"cuda\"\n"
         "[checkpoint]\nevery_steps = 6\nkeep_last = 0\n"
         "[eval]\nbatch_size = 4\n";
}

std::string write_config(const std::string& dir, const std::string& text) {
  fs::create_directories(dir);
  write_file_atomic(dir + "/run.toml", text);
  return dir + "/run.toml";
}

TEST(TrainGpu, TrainsReportsPeakMemoryAndResumesBitIdentically) {
  ELMO_SKIP_WITHOUT_GPU();
  const std::string dir = testing::temp_dir("train_gpu");
  const std::string full = dir + "/full", half = dir + "/half";
  const auto r = run_elmo("--config " + write_config(dir + "/a", tiny_config(full)));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("device: cuda:0"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("peak device memory"), std::string::npos) << r.output;
  const auto summary = nlohmann::json::parse(read_file(full + "/summary.json"));
  EXPECT_EQ(summary["device"], "cuda:0");
  EXPECT_GT(summary["peak_device_memory_bytes"].get<int64_t>(), 0);
  EXPECT_GT(summary["valid"]["ppl"].get<double>(), 1.0);
  EXPECT_TRUE(std::isfinite(summary["final_train_loss"].get<double>()));

  const std::string config_half = write_config(dir + "/b", tiny_config(half));
  ASSERT_EQ(run_elmo("--config " + config_half + " --set train.max_steps=6").status, 0);
  const auto resumed = run_elmo("--config " + config_half + " --resume");
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("resumed from step 6"), std::string::npos) << resumed.output;
  for (const char* file : {"model.safetensors", "optimizer.safetensors", "carry.safetensors"})
    EXPECT_TRUE(read_file(full + "/checkpoints/step-12/" + file) ==
                read_file(half + "/checkpoints/step-12/" + file))
        << file << " differs after resume on the GPU";

  // A GPU-trained checkpoint is plain host safetensors: the CPU evaluates it.
  write_file_atomic(dir + "/held_out.txt", "a b c\nb c a\n");
  const auto eval = run_elmo("eval --checkpoint " + full + " --corpus " + dir + "/held_out.txt");
  EXPECT_EQ(eval.status, 0) << eval.output;
}

TEST(TrainGpu, AutoPicksTheGpuAndNoCudaKeepsTheCpu) {
  ELMO_SKIP_WITHOUT_GPU();
  const std::string dir = testing::temp_dir("auto_gpu");
  const std::string config = write_config(dir, tiny_config(dir + "/run"));
  auto r = run_elmo("--config " + config + " --device auto --set train.max_steps=2");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("device: cuda:0"), std::string::npos) << r.output;
  r = run_elmo("--config " + config + " --device auto --no_cuda --set train.max_steps=2 " +
               "--set run.dir=" + dir + "/cpu_run");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("device: cpu"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace elmo
