// checkpoint.keep_best and early stopping: the tracker's rules (new best, improvement by more
// than min_delta, patience, 0 = never), its state.json round trip; end to end: checkpoints/best
// installed and never pruned, the early stop ending the run normally with its reason, --resume
// deciding exactly as the uninterrupted run, the config errors, and two ranks stopping together.
#include <gtest/gtest.h>

#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>

#include "app/validation_tracker.h"
#include "io/atomic_file.h"
#include "io/checkpoint.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

namespace fs = std::filesystem;
using testing::run_elmo;

Config tracking(int64_t patience, double min_delta, bool keep_best = true) {
  Config c;
  c.train.eval_every = 10;
  c.train.early_stopping_patience = patience;
  c.train.early_stopping_min_delta = min_delta;
  c.checkpoint.keep_best = keep_best;
  return c;
}

TEST(ValidationTracker, NewBestImprovementAndPatience) {
  ValidationTracker t(tracking(2, 0.5));
  EXPECT_TRUE(t.active());
  ValidationVerdict v = t.observe(10, 100.0);  // the first one is always both
  EXPECT_TRUE(v.new_best && v.improvement && !v.stop);
  v = t.observe(20, 99.8);  // a new best, but by less than 0.5: counts towards the patience
  EXPECT_TRUE(v.new_best);
  EXPECT_FALSE(v.improvement);
  EXPECT_EQ(t.since_improvement(), 1);
  EXPECT_EQ(t.best_step(), 20);
  v = t.observe(30, 99.0);  // 0.8 below the best: an improvement, the count restarts
  EXPECT_TRUE(v.new_best && v.improvement);
  EXPECT_EQ(t.since_improvement(), 0);
  v = t.observe(40, 120.0);
  EXPECT_FALSE(v.new_best || v.improvement || v.stop);
  v = t.observe(50, 98.9);  // 0.1 better: new best, no improvement, patience 2 reached
  EXPECT_TRUE(v.new_best && v.stop);
  EXPECT_TRUE(t.exhausted());
  EXPECT_EQ(t.best_step(), 50);
  EXPECT_DOUBLE_EQ(t.best_perplexity(), 98.9);
  EXPECT_EQ(t.validations(), 5);
  EXPECT_NE(t.stop_reason().find("not improved by more than 0.5 for 2 validations"),
            std::string::npos)
      << t.stop_reason();
}

TEST(ValidationTracker, PatienceZeroNeverStopsAndNanIsNeverBetter) {
  ValidationTracker t(tracking(0, 1e9));
  for (int i = 1; i <= 50; ++i) EXPECT_FALSE(t.observe(i, 100.0 + i).stop);
  EXPECT_FALSE(t.exhausted());
  ValidationTracker n(tracking(1, 0.0));
  EXPECT_FALSE(n.observe(1, std::numeric_limits<double>::quiet_NaN()).new_best);
  EXPECT_TRUE(n.exhausted());  // a NaN validation is no improvement
  EXPECT_FALSE(ValidationTracker(tracking(0, 0.0, false)).active());
  EXPECT_TRUE(ValidationTracker(tracking(3, 0.0, false)).active());
}

TEST(ValidationTracker, StateRoundTripsAndDamageIsNamed) {
  ValidationTracker a(tracking(3, 0.25));
  EXPECT_TRUE(a.to_json()["best_ppl"].is_null());
  a.observe(5, 80.0);
  a.observe(10, 81.0);
  ValidationTracker b(tracking(3, 0.25));
  b.restore(nlohmann::json::parse(a.to_json().dump()));
  EXPECT_EQ(b.to_json(), a.to_json());
  EXPECT_EQ(b.observe(15, 79.9).stop, a.observe(15, 79.9).stop);
  EXPECT_EQ(b.to_json(), a.to_json());
  nlohmann::json bad = a.to_json();
  bad.erase("since_improvement");
  EXPECT_NE(testing::error_of([&] { b.restore(bad); }).find("\"since_improvement\""),
            std::string::npos);
  ValidationTracker fresh(tracking(3, 0.25));
  fresh.restore(ValidationTracker(tracking(3, 0.25)).to_json());
  EXPECT_FALSE(fresh.observe(1, 1e300).stop);
}

// ---- end to end ------------------------------------------------------------------------------

// The tests/app/test_train.cpp tiny model, validated every 2 steps.
std::string config_text(const std::string& run_dir, const std::string& extra) {
  return "[run]\ndir = \"" + run_dir +
         "\"\nseed = 5\n"
         "[synthetic]\nvocab_size = 150\nclasses = 4\ntrain_sentences = 3000\n"
         "valid_sentences = 60\n"
         "[model]\nembedding_dim = 16\ncell_size = 32\nprojection_dim = 16\nlayers = 2\n"
         "dropout = 0.1\n"
         "[softmax]\ntype = \"sampled\"\nsamples = 40\n"
         "[train]\nbatch_size = 8\nunroll_steps = 10\nmax_steps = 30\nthreads = 2\n"
         "log_every = 2\ndevice = \"cpu\"\neval_every = 2\n"
         "[eval]\nbatch_size = 4\nmax_tokens = 300\n"
         "[metrics]\ntensorboard = false\n" +
         extra;
}

std::string write_config(const std::string& dir, const std::string& text) {
  fs::create_directories(dir);
  return testing::write_text_file(dir, "run.toml", text);
}

nlohmann::json state_of(const std::string& step_dir) {
  return nlohmann::json::parse(read_file(step_dir + "/state.json"));
}

// min_delta 1e6: only the first validation counts as an improvement, so patience 2 stops the
// run after the validations of steps 2, 4 and 6.
const char* kStopsAtSix =
    " --set train.early_stopping_patience=2 --set train.early_stopping_min_delta=1e6"
    " --set checkpoint.keep_best=true --set checkpoint.every_steps=4 --set checkpoint.keep_last=1";

TEST(KeepBest, EarlyStopEndsTheRunNormallyAndBestSurvivesKeepLast) {
  const std::string dir = testing::temp_dir("keep_best");
  const std::string run = dir + "/run";
  const auto r = run_elmo("--config " + write_config(dir, config_text(run, "")) + kStopsAtSix);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("early stopping at step 6: validation perplexity has not improved by "
                          "more than 1e+06 for 2 validations"),
            std::string::npos)
      << r.output;
  const auto summary = nlohmann::json::parse(read_file(run + "/summary.json"));
  EXPECT_EQ(summary["steps"], 6);
  EXPECT_EQ(summary["stop_reason"].get<std::string>().rfind("early_stopping: ", 0), 0u);
  EXPECT_EQ(summary["validation"]["validations"], 3);
  EXPECT_EQ(summary["validation"]["since_improvement"], 2);
  const int64_t best_step = summary["validation"]["best_step"];
  EXPECT_EQ(summary["best_checkpoint"], run + "/checkpoints/best");
  // keep_last = 1 pruned every step folder but the last; best stays, records its step and
  // perplexity, and loads like any checkpoint (eval finds the vocabulary beside it).
  EXPECT_TRUE(fs::exists(run + "/checkpoints/step-6"));
  EXPECT_FALSE(fs::exists(run + "/checkpoints/step-4"));
  const auto best = state_of(run + "/checkpoints/best");
  EXPECT_EQ(best["step"], best_step);
  EXPECT_EQ(best["best"]["step"], best_step);
  EXPECT_DOUBLE_EQ(best["best"]["valid_ppl"].get<double>(),
                   summary["validation"]["best_ppl"].get<double>());
  EXPECT_EQ(read_file(run + "/checkpoints/latest"), "step-6\n");
  const auto eval = run_elmo("eval --checkpoint " + run + "/checkpoints/best --corpus " +
                             summary["train_corpus"].get<std::string>() + " --max-tokens 50");
  EXPECT_EQ(eval.status, 0) << eval.output;
  EXPECT_NE(eval.output.find("evaluating step " + std::to_string(best_step)), std::string::npos)
      << eval.output;
  // The final checkpoint records the tracker the run ended with.
  EXPECT_EQ(state_of(run + "/checkpoints/step-6")["validation"], summary["validation"]);
}

TEST(KeepBest, ResumeDecidesExactlyAsTheUninterruptedRun) {
  const std::string dir = testing::temp_dir("keep_best_resume");
  const std::string full = dir + "/full", split = dir + "/split";
  const auto whole =
      run_elmo("--config " + write_config(dir + "/a", config_text(full, "")) + kStopsAtSix);
  ASSERT_EQ(whole.status, 0) << whole.output;
  const std::string config = write_config(dir + "/b", config_text(split, "")) + kStopsAtSix;
  // Stopped after step 4 (its final validation counts), resumed to the end.
  const auto first = run_elmo("--config " + config + " --set train.max_steps=4");
  ASSERT_EQ(first.status, 0) << first.output;
  EXPECT_EQ(state_of(split + "/checkpoints/step-4")["validation"]["validations"], 2);
  const auto second = run_elmo("--config " + config + " --resume");
  ASSERT_EQ(second.status, 0) << second.output;
  EXPECT_NE(second.output.find("early stopping at step 6"), std::string::npos) << second.output;
  const auto a = nlohmann::json::parse(read_file(full + "/summary.json"));
  const auto b = nlohmann::json::parse(read_file(split + "/summary.json"));
  EXPECT_EQ(a["validation"], b["validation"]);
  EXPECT_EQ(a["stop_reason"], b["stop_reason"]);
  for (const char* file : {"model.safetensors", "optimizer.safetensors"}) {
    EXPECT_TRUE(read_file(full + "/checkpoints/step-6/" + file) ==
                read_file(split + "/checkpoints/step-6/" + file))
        << file;
    EXPECT_TRUE(read_file(full + "/checkpoints/best/" + file) ==
                read_file(split + "/checkpoints/best/" + file))
        << file;
  }
}

// Patience 0 never stops, even when no validation improves: a learning rate of 1e-30 leaves the
// weights as they are (every update is below half an ulp), so every validation equals the first.
// Patience 1 stops the same run at its second validation.
TEST(KeepBest, PatienceZeroRunsToTheEnd) {
  const std::string dir = testing::temp_dir("keep_best_zero");
  const std::string frozen =
      " --set train.max_steps=8 --set optimizer.learning_rate=1e-30"
      " --set checkpoint.keep_best=true --set checkpoint.every_steps=0";
  const auto r =
      run_elmo("--config " + write_config(dir + "/zero", config_text(dir + "/zero/run", "")) +
               frozen + " --set train.early_stopping_patience=0");
  ASSERT_EQ(r.status, 0) << r.output;
  const auto summary = nlohmann::json::parse(read_file(dir + "/zero/run/summary.json"));
  EXPECT_EQ(summary["steps"], 8);
  EXPECT_EQ(summary["stop_reason"], "completed");
  EXPECT_EQ(summary["validation"]["validations"], 4);  // steps 2, 4, 6 and the final one
  EXPECT_EQ(summary["validation"]["since_improvement"], 3);
  EXPECT_EQ(summary["validation"]["best_step"], 2);
  EXPECT_TRUE(fs::exists(dir + "/zero/run/checkpoints/best/model.safetensors"));
  const auto one =
      run_elmo("--config " + write_config(dir + "/one", config_text(dir + "/one/run", "")) +
               frozen + " --set train.early_stopping_patience=1");
  ASSERT_EQ(one.status, 0) << one.output;
  EXPECT_EQ(nlohmann::json::parse(read_file(dir + "/one/run/summary.json"))["steps"], 4);
}

TEST(KeepBest, ConfigurationsThatCannotWorkAreUsageErrors) {
  const std::string dir = testing::temp_dir("keep_best_bad");
  struct Case {
    std::string sets, expect;
  };
  for (const Case& c : std::vector<Case>{
           {" --set checkpoint.keep_best=true --set train.eval_every=0",
            "'checkpoint.keep_best' = true needs validations during training"},
           {" --set train.eval_every=0 --set train.early_stopping_patience=3",
            "'train.early_stopping_patience' = 3 needs validations"},
           {" --set train.early_stopping_min_delta=-0.5",
            "'train.early_stopping_min_delta' = -0.5 is out of range"},
           {" --set train.early_stopping_patience=-1",
            "'train.early_stopping_patience' = -1 is out of range"},
           {" --set train.early_stopping_min_delta=0.5",
            "'train.early_stopping_min_delta' = 0.5 has no effect without early stopping"},
           {" --set train.early_stopping_patience=1.5", "must be an integer"},
           {" --set checkpoint.keep_best=yes", "must be a boolean"},
           {" --set synthetic.valid_sentences=0 --set checkpoint.keep_best=true",
            "checkpoint.keep_best = true needs validation data"},
           {" --set synthetic.valid_sentences=0 --set train.early_stopping_patience=1",
            "train.early_stopping_patience > 0 needs validation data"},
       }) {
    const auto r =
        run_elmo("--config " + write_config(dir, config_text(dir + "/run", "")) + c.sets);
    EXPECT_EQ(r.status, 2) << c.sets << "\n" << r.output;
    EXPECT_NE(r.output.find(c.expect), std::string::npos) << c.sets << "\n" << r.output;
    EXPECT_FALSE(fs::exists(dir + "/run/checkpoints")) << c.sets;
  }
}

}  // namespace
}  // namespace elmo
