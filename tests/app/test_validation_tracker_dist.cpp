// keep_best and early stopping in a distributed run (label dist): rank 0 validates, every rank
// takes the same decision from the perplexity it shares, so two ranks stop together after the
// same step as one process, with checkpoints/best written and the run ending normally.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "io/atomic_file.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

namespace fs = std::filesystem;
using testing::run_elmo;

std::string config_text(const std::string& run_dir) {
  return "[run]\ndir = \"" + run_dir +
         "\"\nseed = 5\n"
         "[synthetic]\nvocab_size = 150\nclasses = 4\ntrain_sentences = 3000\n"
         "valid_sentences = 60\n"
         "[model]\nembedding_dim = 16\ncell_size = 32\nprojection_dim = 16\nlayers = 2\n"
         "[softmax]\ntype = \"sampled\"\nsamples = 40\n"
         "[train]\nbatch_size = 8\nunroll_steps = 10\nmax_steps = 30\nthreads = 1\n"
         "eval_every = 2\nearly_stopping_patience = 2\nearly_stopping_min_delta = 1e6\n"
         "[checkpoint]\nkeep_best = true\nevery_steps = 0\n"
         "[eval]\nbatch_size = 4\nmax_tokens = 300\n"
         "[metrics]\ntensorboard = false\n"
         "[dist]\ntimeout_seconds = 20\nhot_coverage = 0.5\n";
}

TEST(KeepBestDist, TwoRanksStopAfterTheSameStepAsOneProcess) {
  const std::string dir = testing::temp_dir("keep_best_dist");
  for (const char* world : {"1", "2"}) {
    fs::create_directories(dir + "/" + world);
    const std::string config = testing::write_text_file(dir + "/" + world, "run.toml",
                                                        config_text(dir + "/" + world + "/run"));
    const auto r = run_elmo("--config " + config +
                            (std::string(world) == "2" ? " --nodes 2 --workers_per_node 1" : ""));
    ASSERT_EQ(r.status, 0) << world << " rank(s)\n" << r.output;
    EXPECT_NE(r.output.find("early stopping at step 6"), std::string::npos) << r.output;
    const auto summary = nlohmann::json::parse(read_file(dir + "/" + world + "/run/summary.json"));
    EXPECT_EQ(summary["steps"], 6) << world;
    EXPECT_EQ(summary["validation"]["validations"], 3) << world;
    EXPECT_TRUE(fs::exists(dir + "/" + world + "/run/checkpoints/best/state.json")) << world;
    EXPECT_TRUE(fs::exists(dir + "/" + world + "/run/checkpoints/step-6")) << world;
  }
}

}  // namespace
}  // namespace elmo
