// train: a tiny end-to-end run (checkpoint, metrics, summary), resume equivalence
// (N steps == N/2 + --resume N/2, identical parameter bytes; also from a checkpoint whose
// sampler position is written as older versions wrote it) and every bad-input path of
// must-show 4: one clear line, exit 2 for usage/config, 1 for runtime, checkpoints intact.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "io/atomic_file.h"
#include "io/checkpoint.h"
#include "runtime/cuda_memory.h"
#include "tests/app/sampler_position.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

namespace fs = std::filesystem;
using testing::run_elmo;

// A model small enough to train a few steps in well under a second per step.
std::string tiny_config(const std::string& run_dir, const std::string& extra = "") {
  return "[run]\ndir = \"" + run_dir + "\"\nseed = 5\n"
         "[synthetic]\nvocab_size = 150\nclasses = 4\ntrain_sentences = 3000\n"
         "valid_sentences = 100\n"
         "[model]\nembedding_dim = 16\ncell_size = 32\nprojection_dim = 16\nlayers = 2\n"
         "dropout = 0.1\ncell_clip = 0.5\nproj_clip = 0.5\n"
         "[softmax]\ntype = \"sampled\"\nsamples = 40\n"
         "[train]\nbatch_size = 8\nunroll_steps = 10\nmax_steps = 12\nthreads = 2\n"
         "log_every = 3\ndevice = \"cpu\"\n"  // the CPU reference; GPU runs: test_train_gpu.cpp
         "[checkpoint]\nevery_steps = 6\nkeep_last = 0\n"
         "[eval]\nbatch_size = 4\n" +
         extra;
}

std::string write_config(const std::string& dir, const std::string& text) {
  const std::string path = dir + "/run.toml";
  write_file_atomic(path, text);
  return path;
}

TEST(Train, RunsWritesCheckpointMetricsAndSummary) {
  const std::string dir = testing::temp_dir("train");
  const std::string run = dir + "/run";
  const auto r = run_elmo("--config " + write_config(dir, tiny_config(run)));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("best reachable perplexity"), std::string::npos) << r.output;
  EXPECT_TRUE(fs::exists(run + "/checkpoints/step-12/model.safetensors"));
  EXPECT_TRUE(fs::exists(run + "/checkpoints/step-6/optimizer.safetensors"));
  EXPECT_EQ(read_file(run + "/checkpoints/latest").substr(0, 7), "step-12");
  const auto summary = nlohmann::json::parse(read_file(run + "/summary.json"));
  EXPECT_EQ(summary["steps"], 12);
  EXPECT_GT(summary["tokens_per_s"].get<double>(), 0.0);
  EXPECT_GT(summary["valid"]["ppl"].get<double>(), 1.0);
  EXPECT_EQ(summary["precision"], "fp32");
  EXPECT_EQ(summary["precision_requested"], "fp32");
  std::ifstream metrics(run + "/metrics.jsonl");
  std::string line;
  std::string last_line;
  int lines = 0;
  while (std::getline(metrics, line)) {
    const auto j = nlohmann::json::parse(line);
    EXPECT_TRUE(j.contains("step"));
    ++lines;
    last_line = line;
  }
  EXPECT_GE(lines, 4);
  // The final evaluation's slices: in the summary and in the last metrics line.
  EXPECT_TRUE(summary["valid"]["slices"]["head"]["share"].get<double>() > 0.0);
  EXPECT_TRUE(summary["valid"]["slices"]["eos"]["ppl"].get<double>() > 1.0);
  const auto last = nlohmann::json::parse(last_line);
  EXPECT_TRUE(last.contains("valid_ppl_tail") && last.contains("valid_share_eos")) << last_line;
  EXPECT_TRUE(last.contains("time") && last.contains("wall_time")) << last_line;
  EXPECT_NE(r.output.find("</S> <S>"), std::string::npos) << r.output;  // the slice table
  // Every run ends with its report, path printed.
  EXPECT_TRUE(fs::exists(run + "/report.html"));
  EXPECT_NE(r.output.find("report: " + run + "/report.html"), std::string::npos) << r.output;
  bool events = false;
  for (const auto& e : fs::recursive_directory_iterator(run))
    events |= e.path().filename().string().rfind("events.out.tfevents", 0) == 0;
  EXPECT_TRUE(events);
  // A second fresh run into the same folder refuses instead of overwriting.
  const auto again = run_elmo("--config " + dir + "/run.toml");
  EXPECT_EQ(again.status, 2);
  EXPECT_NE(again.output.find("--resume"), std::string::npos) << again.output;
}

TEST(Train, ResumeContinuesBitIdentically) {
  const std::string dir = testing::temp_dir("resume");
  const std::string full = dir + "/full", half = dir + "/half";
  fs::create_directories(dir + "/a");
  fs::create_directories(dir + "/b");
  const std::string config_full = write_config(dir + "/a", tiny_config(full));
  const std::string config_half = write_config(dir + "/b", tiny_config(half));
  ASSERT_EQ(run_elmo("--config " + config_full).status, 0);
  const auto first = run_elmo("--config " + config_half + " --set train.max_steps=6");
  ASSERT_EQ(first.status, 0) << first.output;
  const auto second = run_elmo("--config " + config_half + " --resume");
  ASSERT_EQ(second.status, 0) << second.output;
  EXPECT_NE(second.output.find("resumed from step 6"), std::string::npos) << second.output;
  for (const char* file : {"model.safetensors", "optimizer.safetensors", "carry.safetensors"})
    EXPECT_TRUE(read_file(full + "/checkpoints/step-12/" + file) ==
                read_file(half + "/checkpoints/step-12/" + file))
        << file << " differs after resume";
}

// state.json "sampler_rng" is the negative sampler's position after the checkpoint's steps, as
// every version has written it (each step draws once from Rng(run.seed, kRngSampler)): the
// checkpoint holds exactly the replayed position, and a checkpoint carrying that position as an
// older version wrote it (the same three keys) resumes to the parameters of an uninterrupted run.
TEST(Train, CheckpointedSamplerPositionIsTheStepsDrawsAndResumesExactly) {
  const std::string dir = testing::temp_dir("sampler_position");
  const std::string full = dir + "/full", half = dir + "/half";
  fs::create_directories(dir + "/a");
  fs::create_directories(dir + "/b");
  ASSERT_EQ(run_elmo("--config " + write_config(dir + "/a", tiny_config(full))).status, 0);
  const std::string config_half = write_config(dir + "/b", tiny_config(half));
  ASSERT_EQ(run_elmo("--config " + config_half + " --set train.max_steps=6").status, 0);
  const std::string state_path = half + "/checkpoints/step-6/state.json";
  nlohmann::json state = nlohmann::json::parse(read_file(state_path));
  const nlohmann::json old_format =  // run.seed = 5, softmax.samples = 40
      testing::sampler_position_after(5, state.at("vocab_size").get<int64_t>(), 40, 6);
  EXPECT_EQ(state.at("sampler_rng"), old_format);
  state["sampler_rng"] = old_format;
  write_file_atomic(state_path, state.dump(2) + "\n");
  const auto resumed = run_elmo("--config " + config_half + " --resume");
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  for (const char* file : {"model.safetensors", "optimizer.safetensors", "carry.safetensors"})
    EXPECT_TRUE(read_file(full + "/checkpoints/step-12/" + file) ==
                read_file(half + "/checkpoints/step-12/" + file))
        << file << " differs after resuming the old-format position";
}

// data.packing = "contiguous" (the TF PTB tutorial's rows), forward only, with the tutorial's
// starting values: N steps == N/2 + --resume N/2 bit for bit, whether the resume lands in the
// middle of an epoch or exactly on its end (the next step then restarts from zero state); `eval`
// of the checkpoint predicts every id of the text but the first, as the run's own evaluation.
std::string contiguous_config(const std::string& run_dir) {
  return tiny_config(run_dir, "[data]\npacking = \"contiguous\"\nshuffle = false\n") + "\n";
}

const char* kContiguousSets =
    " --set model.bidirectional=false --set synthetic.train_sentences=100"
    " --set model.forget_bias=0 --set model.softmax_bias_init=uniform"
    " --set checkpoint.every_steps=0";

TEST(Train, ContiguousPackingResumesBitIdenticallyAcrossAnEpochEnd) {
  const std::string dir = testing::temp_dir("contiguous");
  const std::string full = dir + "/full";
  fs::create_directories(dir + "/a");
  const std::string config_full = write_config(dir + "/a", contiguous_config(full));
  auto r = run_elmo("--config " + config_full + kContiguousSets + " --set train.max_steps=40");
  ASSERT_EQ(r.status, 0) << r.output;
  // Batches per epoch, from the batcher position of the final checkpoint.
  const auto final_state =
      nlohmann::json::parse(read_file(full + "/checkpoints/step-40/state.json"));
  const auto& batcher = final_state.at("batcher");
  ASSERT_EQ(batcher.at("packing"), "contiguous");
  ASSERT_GE(batcher.at("epoch").get<int64_t>(), 1) << "40 steps must cross an epoch end";
  const int64_t epoch = batcher.at("epoch").get<int64_t>();
  const int64_t per_epoch = (40 - batcher.at("epoch_batch").get<int64_t>()) / epoch;
  ASSERT_GE(per_epoch, 4);
  for (const int64_t stop : {per_epoch - 3, per_epoch}) {
    const std::string half = dir + "/half" + std::to_string(stop);
    fs::create_directories(half + "-cfg");
    const std::string config_half = write_config(half + "-cfg", contiguous_config(half));
    r = run_elmo("--config " + config_half + kContiguousSets +
                 " --set train.max_steps=" + std::to_string(stop));
    ASSERT_EQ(r.status, 0) << r.output;
    r = run_elmo("--config " + config_half + kContiguousSets +
                 " --set train.max_steps=40 --resume");
    ASSERT_EQ(r.status, 0) << r.output;
    for (const char* file : {"model.safetensors", "optimizer.safetensors", "carry.safetensors"})
      EXPECT_TRUE(read_file(full + "/checkpoints/step-40/" + file) ==
                  read_file(half + "/checkpoints/step-40/" + file))
          << file << " differs after resuming at step " << stop;
  }
  // eval reads the packing from the checkpoint's config: the same numbers as the run's own.
  const auto summary = nlohmann::json::parse(read_file(full + "/summary.json"));
  std::string valid;
  for (const auto& e : fs::recursive_directory_iterator(full + "/data"))
    if (e.path().filename() == "valid.txt") valid = e.path().string();
  ASSERT_FALSE(valid.empty());
  r = run_elmo("eval --checkpoint " + full + " --corpus " + valid +
               " --batch-size 4 --unroll-steps 20 --json " + dir + "/eval.json");
  ASSERT_EQ(r.status, 0) << r.output;
  const auto evaluated = nlohmann::json::parse(read_file(dir + "/eval.json"));
  EXPECT_EQ(evaluated.at("ppl"), summary.at("valid").at("ppl"));
  EXPECT_EQ(evaluated.at("tokens"), summary.at("valid").at("tokens"));
  int64_t words = 0, lines = 0;
  {
    std::ifstream in(valid);
    std::string line;
    while (std::getline(in, line)) {
      ++lines;
      std::istringstream split(line);
      std::string w;
      while (split >> w) ++words;
    }
  }
  EXPECT_EQ(evaluated.at("tokens").get<int64_t>(), words + lines - 1);
  // Resuming with the other packing is refused, and the checkpoint stays as it was.
  const std::string model = full + "/checkpoints/step-40/model.safetensors";
  const std::string before = read_file(model);
  r = run_elmo("--config " + config_full + kContiguousSets +
               " --set train.max_steps=50 --resume --set data.packing=sentences");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("data.packing"), std::string::npos) << r.output;
  EXPECT_EQ(read_file(model), before);
}

// A run stopped by SIGTERM (or Ctrl-C) still leaves its report, made from what it logged.
TEST(Train, AStoppedOrFailedRunStillWritesItsReport) {
  const std::string dir = testing::temp_dir("train_stopped");
  const std::string run = dir + "/run";
  const std::string config = write_config(dir, tiny_config(run));
  const auto r = testing::run_command(
      std::string(ELMO_BINARY) + " --config " + config + " --set train.max_steps=1000000 > " + dir +
      "/log 2>&1 & pid=$!; for i in $(seq 1200); do [ -s " + run +
      "/metrics.jsonl ] && break; sleep 0.05; done; kill -TERM $pid; wait $pid; echo \"rc=$?\"");
  EXPECT_NE(r.output.find("rc=143"), std::string::npos) << r.output << read_file(dir + "/log");
  const std::string log = read_file(dir + "/log");
  EXPECT_NE(log.find("stopped by signal 15"), std::string::npos) << log;
  EXPECT_NE(log.find("report: " + run + "/report.html"), std::string::npos) << log;
  const std::string page = read_file(run + "/report.html");
  EXPECT_NE(page.find("no summary.json"), std::string::npos);
  EXPECT_NE(page.find("data-series=\"loss\""), std::string::npos);
  // A run that fails while training (here: diverges) leaves it too, before the error.
  const std::string diverged = dir + "/diverged";
  const auto d =
      run_elmo("--config " + config + " --set run.dir=" + diverged +
               " --set optimizer.type=sgd --set optimizer.learning_rate=1000000 "
               "--set optimizer.clip_norm=0 --set model.cell_clip=0 "
               "--set model.proj_clip=0 --set softmax.type=full --set train.log_every=1");
  EXPECT_EQ(d.status, 1) << d.output;
  EXPECT_NE(d.output.find("training diverged"), std::string::npos) << d.output;
  EXPECT_NE(d.output.find("report: " + diverged + "/report.html"), std::string::npos) << d.output;
  EXPECT_TRUE(fs::exists(diverged + "/report.html"));
}

struct BadCase {
  const char* name;
  std::string config_text;  // written as run.toml
  std::string extra_args;
  int status;
  std::string must_mention;
};

TEST(Train, BadInputGivesOneClearLineAndTheRightExitCode) {
  const std::string dir = testing::temp_dir("bad");
  const std::string run = dir + "/run";
  const std::string empty_file = dir + "/empty.txt", bad_utf8 = dir + "/bad.txt",
                    empty_vocab = dir + "/vocab.txt";
  write_file_atomic(empty_file, "\n\n");
  write_file_atomic(bad_utf8, "a b c\nd \xc3\x28 e\n");
  write_file_atomic(empty_vocab, "");
  const std::string tiny_text = dir + "/tiny.txt";  // 4 ids: no contiguous batch of 8 x 10
  write_file_atomic(tiny_text, "a b c\n");
  const std::string base = tiny_config(run);
  const std::vector<BadCase> cases = {
      {"malformed toml", base + "[train\n", "", 2, "run.toml:"},
      {"unknown key", tiny_config(run, "[optimizer]\nlearnin_rate = 1\n"), "", 2, "learning_rate"},
      {"wrong type", base, "--set train.batch_size='\"big\"'", 2, "train.batch_size"},
      {"negative size", base, "--set model.cell_size=-3", 2, "model.cell_size"},
      {"absurd size", base, "--set model.cell_size=100000000", 2, "model.cell_size"},
      {"missing corpus", base, "--set data.corpus=" + dir + "/nope.txt", 1, "nope.txt"},
      {"empty corpus", base, "--set data.corpus=" + empty_file, 1, "empty"},
      {"invalid utf-8", base, "--set data.corpus=" + bad_utf8, 1, "bad.txt:2"},
      {"empty vocab", base, "--set data.vocab=" + empty_vocab, 1, "empty"},
      {"samples >= vocab", base, "--set softmax.samples=100000", 2, "softmax.samples"},
      {"bad packing", base, "--set data.packing=streams", 2, "data.packing"},
      {"contiguous backward LM", base, "--set data.packing=contiguous --set data.shuffle=false", 2,
       "model.bidirectional"},
      {"contiguous shuffled", base, "--set data.packing=contiguous --set model.bidirectional=false",
       2, "data.shuffle"},
      {"contiguous text too short", base,
       "--set data.packing=contiguous --set data.shuffle=false --set model.bidirectional=false "
       "--set data.corpus=" +
           tiny_text,
       2, "train.batch_size"},
      {"forget bias out of range", base, "--set model.forget_bias=500", 2, "model.forget_bias"},
      {"bad softmax bias init", base, "--set model.softmax_bias_init=normal", 2,
       "model.softmax_bias_init"},
  };
  for (const BadCase& c : cases) {
    fs::remove_all(run);
    const std::string config = write_config(dir, c.config_text);
    const auto r = run_elmo("--config " + config + " " + c.extra_args);
    EXPECT_EQ(r.status, c.status) << c.name << ": " << r.output;
    EXPECT_NE(r.output.find(c.must_mention), std::string::npos) << c.name << ": " << r.output;
    EXPECT_EQ(r.output.find("terminate called"), std::string::npos) << c.name;
  }
}

TEST(Train, BadCheckpointsAreRefusedAndLeftIntact) {
  const std::string dir = testing::temp_dir("badckpt");
  const std::string run = dir + "/run";
  const std::string config = write_config(dir, tiny_config(run, ""));
  ASSERT_EQ(run_elmo("--config " + config + " --set train.max_steps=6").status, 0);
  const std::string model = run + "/checkpoints/step-6/model.safetensors";
  const std::string before = read_file(model);

  // A different model shape.
  auto r = run_elmo("--config " + config + " --resume --set model.cell_size=48");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("model shape"), std::string::npos) << r.output;
  EXPECT_EQ(read_file(model), before);

  const std::string text = dir + "/held_out.txt";
  write_file_atomic(text, "a b c\n");
  // A truncated checkpoint file.
  const std::string copy = dir + "/copy";
  fs::copy(run, copy, fs::copy_options::recursive);
  const std::string copied_model = copy + "/checkpoints/step-6/model.safetensors";
  fs::resize_file(copied_model, fs::file_size(copied_model) / 2);
  r = run_elmo("eval --checkpoint " + copy + " --corpus " + text);
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("truncated"), std::string::npos) << r.output;

  // A foreign checkpoint (state.json of something else).
  const std::string foreign = dir + "/foreign/checkpoints/step-1";
  fs::create_directories(foreign);
  write_file_atomic(foreign + "/state.json", "{\"global_step\": 3}");
  write_file_atomic(dir + "/foreign/checkpoints/latest", "step-1\n");
  r = run_elmo("eval --checkpoint " + dir + "/foreign --corpus " + run + "/data");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("not an elmo_fast checkpoint"), std::string::npos) << r.output;
  EXPECT_EQ(read_file(model), before);
}

TEST(Train, DeviceChoiceRefusesWhatCannotRun) {
  const std::string dir = testing::temp_dir("device");
  const std::string config = write_config(dir, tiny_config(dir + "/run"));
  auto r = run_elmo("--config " + config + " --device cuda --no_cuda");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("--no_cuda refuses"), std::string::npos) << r.output;
  r = run_elmo("--config " + config + " --device cuda:9");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find(cuda_device_count() == 0 ? "no GPU is visible" : "GPU(s) are visible"),
            std::string::npos)
      << r.output;
  r = run_elmo("--config " + config + " --device tpu");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir + "/run/checkpoints")) << "refused before any work";
}

// train.precision on the CPU (app/train.cpp check_precision_request): tf32/bf16 together with
// an explicit CPU request is a usage error naming both, before any work; "auto" without a GPU
// trains in fp32 with a warning, and summary.json says what was asked and what ran.
TEST(Train, PrecisionOnTheCpuIsRefusedWhenAskedOrFallsBackWithAWarning) {
  const std::string dir = testing::temp_dir("precision");
  const std::string run = dir + "/run";
  const std::string config = write_config(dir, tiny_config(run));  // train.device = "cpu"
  struct Case {
    std::string args, must_mention;
  };
  for (const Case& c : std::vector<Case>{
           {"--set train.precision=bf16", "train.device = \"cpu\""},
           {"--set train.precision=tf32 --set train.device=auto --device cpu", "--device cpu"},
           {"--set train.precision=bf16 --set train.device=auto --no_cuda", "--no_cuda"}}) {
    const auto r = run_elmo("--config " + config + " " + c.args);
    EXPECT_EQ(r.status, 2) << c.args << ": " << r.output;
    EXPECT_NE(r.output.find("train.precision = \""), std::string::npos) << r.output;
    EXPECT_NE(r.output.find(c.must_mention), std::string::npos) << c.args << ": " << r.output;
    EXPECT_NE(r.output.find("--set train.precision=fp32"), std::string::npos) << r.output;
    EXPECT_EQ(r.output.find("terminate called"), std::string::npos) << r.output;
    EXPECT_FALSE(fs::exists(run + "/checkpoints")) << "refused before any work: " << c.args;
  }
  // fp32 on the CPU is what the CPU computes: no complaint.
  auto r = run_elmo("--config " + config + " --set train.max_steps=2 --set train.precision=fp32");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(r.output.find("train.precision"), std::string::npos) << r.output;
  fs::remove_all(run);

  if (!cuda_compiled_in()) {  // a CPU-only build refuses a GPU precision outright
    r = run_elmo("--config " + config + " --set train.device=auto --set train.precision=tf32");
    EXPECT_EQ(r.status, 2) << r.output;
    EXPECT_NE(r.output.find("built without CUDA"), std::string::npos) << r.output;
    return;
  }
  // "auto": a GPU when there is one (the precision applies), else the CPU in fp32 with a warning.
  r = run_elmo("--config " + config +
               " --set train.max_steps=2 --set train.device=auto --set train.precision=tf32");
  ASSERT_EQ(r.status, 0) << r.output;
  const auto summary = nlohmann::json::parse(read_file(run + "/summary.json"));
  EXPECT_EQ(summary["precision_requested"], "tf32");
  if (cuda_device_count() == 0) {
    EXPECT_NE(r.output.find("which computes fp32"), std::string::npos) << r.output;
    EXPECT_EQ(summary["device"], "cpu");
    EXPECT_EQ(summary["precision"], "fp32");
  } else {
    EXPECT_EQ(summary["device"], "cuda:0");
    EXPECT_EQ(summary["precision"], "tf32");
    EXPECT_TRUE(summary.contains("device_name"));
  }
}

// The held-out text of the builtin corpus a run generated (run/data/synthetic-*/valid.txt).
std::string synthetic_valid(const std::string& run) {
  for (const auto& e : fs::recursive_directory_iterator(run + "/data"))
    if (e.path().filename() == "valid.txt") return e.path().string();
  return "";
}

// Issue 15's must-show: four flipped bytes in the middle of model.safetensors used to give a
// slightly different perplexity; now every load refuses them naming the tensor, and names the
// newest older checkpoint that verifies with the flag that loads it.
TEST(Train, FlippedCheckpointBytesAreRefusedNamingTheTensor) {
  const std::string dir = testing::temp_dir("flipped");
  const std::string run = dir + "/run";
  const std::string config = write_config(dir, tiny_config(run));
  ASSERT_EQ(run_elmo("--config " + config).status, 0);  // checkpoints at steps 6 and 12
  const std::string model = run + "/checkpoints/step-12/model.safetensors";
  std::string bytes = read_file(model);
  for (size_t i = 0; i < 4; ++i) bytes[bytes.size() / 2 + i] ^= 0x24;
  write_file_atomic(model, bytes);
  const std::string older = run + "/checkpoints/step-6";

  auto r = run_elmo("eval --checkpoint " + run + " --corpus " + synthetic_valid(run));
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find(model + ": tensor '"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("' fails its checksum"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("--checkpoint " + older), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("perplexity"), std::string::npos) << r.output;

  r = run_elmo("--config " + config + " --resume");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("' fails its checksum"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("resume from it with --resume=" + older), std::string::npos) << r.output;
  EXPECT_EQ(read_file(model), bytes) << "the damaged file is left as it was";

  r = run_elmo("--config " + config + " --resume=" + older + " --set train.max_steps=8");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("resumed from step 6"), std::string::npos) << r.output;
}

// tests/data/legacy-checkpoint was written before checkpoints carried checksums: it evaluates
// and resumes, with a one-line notice, and what the resumed run saves carries them.
TEST(Train, CheckpointsWithoutChecksumsEvaluateAndResumeWithANotice) {
  const std::string dir = testing::temp_dir("legacy");
  const std::string run = dir + "/legacy";
  fs::copy(testing::source_dir() + "/tests/data/legacy-checkpoint", run,
           fs::copy_options::recursive);
  const std::string notice = "carries no tensor checksums (written before elmo_fast had them)";
  auto r = run_elmo("eval --checkpoint " + run + " --corpus " + run + "/valid.txt");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find(notice), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("perplexity"), std::string::npos) << r.output;

  r = run_elmo("--config " + run + "/run.toml --set run.dir=" + run +
               " --set train.max_steps=4 --resume");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find(notice), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("resumed from step 2"), std::string::npos) << r.output;
  r = run_elmo("eval --checkpoint " + run + " --corpus " + run + "/valid.txt");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(r.output.find(notice), std::string::npos) << "step-4 carries checksums: " << r.output;
}

// `elmo_fast <args>` with the test hook ELMO_INJECT_NAN_STEPS set (step_runner.h).
testing::CommandResult run_poisoned(const std::string& steps, const std::string& args) {
  return testing::run_command("ELMO_INJECT_NAN_STEPS=" + steps + " " + testing::elmo_binary() +
                              " " + args);
}

std::vector<std::vector<float>> tensors_of(const std::string& step_dir, const char* file) {
  const CheckpointData ckpt = load_checkpoint(step_dir);
  std::vector<std::vector<float>> out;
  for (const auto& [name, tensor] : *ckpt.file(file)) out.push_back(tensor.to_floats());
  return out;
}

// A step whose gradient norm (step 5) or loss (step 6) is NaN changes neither the parameters
// nor the optimizer state; it is logged and counted in metrics and summary.json.
TEST(Train, NonFiniteStepsAreSkippedWithoutAnUpdate) {
  const std::string dir = testing::temp_dir("nan_skip");
  const std::string run = dir + "/run";
  const std::string config = write_config(dir, tiny_config(run));
  const auto r = run_poisoned("5,loss:6", "--config " + config +
                                              " --set train.max_steps=8 --set train.log_every=4 "
                                              "--set checkpoint.every_steps=1");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("step 5 skipped: loss "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("gradient norm nan (not finite)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("step 6 skipped: loss nan"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("went back"), std::string::npos) << "2 < train.max_bad_steps = 3";
  const std::string ckpt = run + "/checkpoints/step-";
  for (const char* file : {"model", "optimizer"}) {
    EXPECT_EQ(tensors_of(ckpt + "4", file), tensors_of(ckpt + "6", file)) << file;
    EXPECT_NE(tensors_of(ckpt + "6", file), tensors_of(ckpt + "7", file)) << file;
  }
  const auto summary = nlohmann::json::parse(read_file(run + "/summary.json"));
  EXPECT_EQ(summary["steps"], 8);
  EXPECT_EQ(summary["skipped_steps"], 2);
  EXPECT_EQ(summary["bad_step_reloads"], 0);
  EXPECT_EQ(summary["lr_scale"], 1.0);
  std::ifstream metrics(run + "/metrics.jsonl");
  std::string line, last;
  while (std::getline(metrics, line))
    if (line.find("\"loss\"") != std::string::npos) last = line;
  EXPECT_EQ(nlohmann::json::parse(last)["skipped_steps"], 2) << last;
}

// train.max_bad_steps (3) bad steps in a row: the run goes back to its last checkpoint (step 6)
// and trains steps 7.. again with the learning rate halved. Model, optimizer, carried state,
// data position and sampler all come from the checkpoint: the result is bit for bit that of a
// run resumed from step 6 with optimizer.learning_rate = 0.1.
TEST(Train, ABadStreakGoesBackToTheLastCheckpointWithALowerLearningRate) {
  const std::string dir = testing::temp_dir("nan_reload");
  const std::string run = dir + "/run", reference = dir + "/reference";
  const std::string config = write_config(dir, tiny_config(run));
  auto r = run_poisoned("7,loss:8,9", "--config " + config);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("went back to checkpoint " + run + "/checkpoints/step-6"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("learning rate scaled by 0.5 (return 1 of 3)"), std::string::npos)
      << r.output;
  const auto summary = nlohmann::json::parse(read_file(run + "/summary.json"));
  EXPECT_EQ(summary["steps"], 12);
  EXPECT_EQ(summary["skipped_steps"], 3);
  EXPECT_EQ(summary["bad_step_reloads"], 1);
  EXPECT_EQ(summary["lr_scale"], 0.5);
  const auto state = nlohmann::json::parse(read_file(run + "/checkpoints/step-12/state.json"));
  EXPECT_EQ(state["lr_scale"], 0.5);

  ASSERT_EQ(
      run_elmo("--config " + config + " --set run.dir=" + reference + " --set train.max_steps=6")
          .status,
      0);
  r = run_elmo("--config " + config + " --set run.dir=" + reference +
               " --set optimizer.learning_rate=0.1 --resume");
  ASSERT_EQ(r.status, 0) << r.output;
  for (const char* file : {"model.safetensors", "optimizer.safetensors", "carry.safetensors"})
    EXPECT_TRUE(read_file(run + "/checkpoints/step-12/" + file) ==
                read_file(reference + "/checkpoints/step-12/" + file))
        << file << " differs from the resumed run";
}

TEST(Train, ABadStreakWithNowhereToGoStopsWithAClearError) {
  const std::string dir = testing::temp_dir("nan_stop");
  const std::string run = dir + "/run";
  const std::string config = write_config(dir, tiny_config(run));
  auto r = run_poisoned("1,2,3", "--config " + config);
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("training diverged: steps 1 to 3 all had a NaN or Inf loss or gradient "
                          "norm and there is no checkpoint to go back to"),
            std::string::npos)
      << r.output;
  EXPECT_EQ(r.output.find("terminate called"), std::string::npos) << r.output;
  fs::remove_all(run);
  r = run_poisoned("7,8,9", "--config " + config + " --set train.max_bad_step_reloads=0");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("after 0 return(s) to a checkpoint (train.max_bad_step_reloads = 0)"),
            std::string::npos)
      << r.output;
  EXPECT_EQ(load_checkpoint(run).step, 6) << "the last checkpoint stays";
  // With one return allowed, a second streak after it stops the run.
  fs::remove_all(run);
  r = run_poisoned("7,8,9,loss:10,11,12", "--config " + config +
                                              " --set train.max_steps=14 "
                                              "--set train.max_bad_step_reloads=1");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("steps 10 to 12 all had"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("after 1 return(s)"), std::string::npos) << r.output;

  // Bad settings are usage errors before any work.
  struct Case {
    std::string args, must_mention;
  };
  for (const Case& c :
       std::vector<Case>{{"--set train.max_bad_steps=0", "train.max_bad_steps"},
                         {"--set train.bad_step_lr_scale=0", "train.bad_step_lr_scale"},
                         {"--set train.bad_step_lr_scale=1.5", "train.bad_step_lr_scale"},
                         {"--set train.max_bad_step_reloads=-1", "train.max_bad_step_reloads"}}) {
    fs::remove_all(run);
    r = run_elmo("--config " + config + " " + c.args);
    EXPECT_EQ(r.status, 2) << c.args << ": " << r.output;
    EXPECT_NE(r.output.find(c.must_mention), std::string::npos) << c.args << ": " << r.output;
  }
  for (const char* spec : {"x", "0", "5,loss:", "loss:-1", "5;6"}) {
    fs::remove_all(run);
    r = run_poisoned(std::string("'") + spec + "'", "--config " + config);
    EXPECT_EQ(r.status, 2) << spec << ": " << r.output;
    EXPECT_NE(r.output.find("ELMO_INJECT_NAN_STEPS"), std::string::npos) << r.output;
    EXPECT_FALSE(fs::exists(run + "/checkpoints")) << "refused before any work: " << spec;
  }
}

}  // namespace
}  // namespace elmo
