// The training plan per rank (label dist): `plan --world-size 2` against the peak resident
// memory of rank 0 of a real two-rank CPU run (VmHWM, summary.json), within 15%, on a config
// where the LSTM activations of the rank's half of the batch dominate. Rank 0 is the rank that
// also validates and writes the summary, so it holds every item the plan lists.
#include <gtest/gtest.h>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "io/atomic_file.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

using testing::run_elmo;

TEST(TrainingPlanDist, HostBytesPerRankMatchRankZerosPeakMemory) {
  ELMO_SKIP_UNDER_ASAN();
  const std::string dir = testing::temp_dir("plan_dist");
  const std::string config = testing::write_text_file(
      dir, "run.toml",
      "[run]\ndir = \"" + dir +
          "/run\"\n"
          "[synthetic]\ntrain_sentences = 20000\nvalid_sentences = 200\n"
          "[model]\ncell_size = 512\nprojection_dim = 128\n"
          "[softmax]\nsamples = 1000\n"
          "[train]\nbatch_size = 128\nunroll_steps = 64\nmax_steps = 2\nthreads = 1\n"
          "device = \"cpu\"\n[checkpoint]\nevery_steps = 0\n[eval]\nbatch_size = 64\n"
          "max_tokens = 2000\n[metrics]\ntensorboard = false\n[dist]\ntimeout_seconds = 60\n");
  const auto plan = run_elmo("plan --config " + config + " --world-size 2 --no-probe --json " +
                             dir + "/plan.json");
  ASSERT_EQ(plan.status, 0) << plan.output;
  const auto planned = nlohmann::json::parse(read_file(dir + "/plan.json"));
  EXPECT_EQ(planned["rows_per_rank"], 64);
  const auto train = run_elmo("--config " + config + " --nodes 2 --workers_per_node 1");
  ASSERT_EQ(train.status, 0) << train.output;
  const auto summary = nlohmann::json::parse(read_file(dir + "/run/summary.json"));
  EXPECT_EQ(summary["world_size"], 2);
  const double bytes = planned["host_bytes"].get<double>();
  const double peak = summary["peak_host_memory_bytes"].get<double>();
  std::printf("rank 0 of 2: planned %.0f bytes, measured peak %.0f bytes: planned / peak = %.4f\n",
              bytes, peak, bytes / peak);
  EXPECT_GT(peak, 4.0e8);  // the activations dominate the process's own ~170 MiB
  EXPECT_NEAR(bytes / peak, 1.0, 0.15) << bytes << " planned, " << peak;
}

}  // namespace
}  // namespace elmo
