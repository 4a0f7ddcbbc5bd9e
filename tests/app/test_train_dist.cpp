// Distributed training end to end, on loopback (label dist): N ranks with the same global batch
// give the parameters of one rank; resuming a mid-run or a final checkpoint is exact; the
// rendezvous refuses a wrong job token and names a rank that never joins; killing a rank stops
// the others with its number and --resume continues.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "io/atomic_file.h"
#include "io/checkpoint.h"
#include "runtime/host_memory.h"
#include "tests/app/sampler_position.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using testing::run_elmo;
using ::testing::HasSubstr;

std::string dist_config(const std::string& run_dir, int64_t max_steps, int64_t every_steps) {
  return "[run]\ndir = \"" + run_dir + "\"\nseed = 5\n"
         "[synthetic]\nvocab_size = 150\nclasses = 4\ntrain_sentences = 3000\n"
         "valid_sentences = 60\n"
         "[model]\nembedding_dim = 16\ncell_size = 32\nprojection_dim = 16\nlayers = 2\n"
         "dropout = 0.1\ncell_clip = 3\nproj_clip = 3\n"
         "[softmax]\ntype = \"sampled\"\nsamples = 40\n"
         "[train]\nbatch_size = 8\nunroll_steps = 10\nthreads = 1\nlog_every = 2\n"
         "max_steps = " + std::to_string(max_steps) + "\n"
         "[checkpoint]\nevery_steps = " + std::to_string(every_steps) + "\nkeep_last = 0\n"
         "[eval]\nbatch_size = 4\nmax_tokens = 300\n"
         "[dist]\ntimeout_seconds = 20\nhot_coverage = 0.5\n";
}

std::string write_config(const std::string& dir, const std::string& text) {
  fs::create_directories(dir);
  const std::string path = dir + "/run.toml";
  write_file_atomic(path, text);
  return path;
}

// A command running in the background (its own process, `exec`ed by sh) with its output in a
// file.
class Background {
 public:
  Background(const std::string& command, const std::string& log) : log_(log) {
    pid_ = ::fork();
    if (pid_ == 0) {
      const std::string line = "exec " + command + " >" + log + " 2>&1";
      ::execl("/bin/sh", "sh", "-c", line.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
  }
  ~Background() {
    if (running()) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  pid_t pid() const { return pid_; }
  bool running() {
    if (done_) return false;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      done_ = true;
      code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    return !done_;
  }
  // Exit code, or -1 when still running after `seconds`.
  int wait(double seconds) {
    const auto end = Clock::now() + std::chrono::duration<double>(seconds);
    while (running() && Clock::now() < end) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    return running() ? -1 : code_;
  }
  std::string output() const { return read_file(log_); }

 private:
  std::string log_;
  pid_t pid_ = -1;
  bool done_ = false;
  int code_ = -1;
};

std::string env_rank(int rank, int world, int port) {
  return "env RANK=" + std::to_string(rank) + " WORLD_SIZE=" + std::to_string(world) +
         " MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(port) +
         " ELMO_JOB_TOKEN=test-token " + std::string(ELMO_BINARY);
}

NamedTensors final_model(const std::string& run_dir) {
  const CheckpointData ckpt = load_checkpoint(run_dir);
  const NamedTensors* model = ckpt.file("model");
  EXPECT_NE(model, nullptr) << run_dir;
  return model ? *model : NamedTensors{};
}

// The final models of two runs agree within 1e-5 (float summation order), tensor by tensor.
void expect_same_models(const std::string& run_dir, const std::string& reference_dir) {
  const NamedTensors reference = final_model(reference_dir);
  const NamedTensors model = final_model(run_dir);
  ASSERT_EQ(model.size(), reference.size());
  ASSERT_FALSE(model.empty());
  for (size_t i = 0; i < model.size(); ++i)
    EXPECT_TRUE(testing::all_close(model[i].second.to_floats(), reference[i].second.to_floats(),
                                   1e-5f, 1e-5f))
        << model[i].first << " of " << run_dir;
}

// Must-show: 1, 2 and 4 ranks with the same global batch (8 rows) reach the same parameters.
// Tolerance 1e-5: the ranks' partial gradient sums are added in another order than one rank's
// (float rounding), nothing else differs (same rows, samples and dropout masks).
TEST(TrainDist, OneTwoAndFourRanksReachTheSameParameters) {
  const std::string dir = testing::temp_dir("train_dist_same");
  const int64_t steps = 6;
  const auto one = run_elmo("--config " + write_config(dir + "/1", dist_config(dir + "/1/run", steps, 3)));
  ASSERT_EQ(one.status, 0) << one.output;
  const auto two = run_elmo("--config " + write_config(dir + "/2", dist_config(dir + "/2/run", steps, 3)) +
                            " --nodes 2 --workers_per_node 1");
  ASSERT_EQ(two.status, 0) << two.output;
  // Four ranks with the LSTM gradients summed during the backward ("auto" would not on one
  // machine), two without.
  const auto four = run_elmo("--config " + write_config(dir + "/4", dist_config(dir + "/4/run", steps, 3)) +
                             " --nodes 2 --workers_per_node 2 --set dist.overlap_allreduce=on");
  ASSERT_EQ(four.status, 0) << four.output;
  EXPECT_NE(four.output.find("best reachable perplexity"), std::string::npos) << four.output;
  EXPECT_NE(four.output.find("during the backward"), std::string::npos) << four.output;
  EXPECT_EQ(two.output.find("during the backward"), std::string::npos) << two.output;
  // Rank 0 writes the report; the launcher finds it up to date and leaves it.
  const std::string report_line = "report: " + dir + "/2/run/report.html";
  EXPECT_TRUE(fs::exists(dir + "/2/run/report.html"));
  EXPECT_NE(two.output.find(report_line), std::string::npos) << two.output;
  EXPECT_EQ(two.output.find(report_line), two.output.rfind(report_line)) << two.output;

  const NamedTensors reference = final_model(dir + "/1/run");
  ASSERT_FALSE(reference.empty());
  for (const char* world : {"2", "4"}) {
    const NamedTensors model = final_model(dir + "/" + world + "/run");
    ASSERT_EQ(model.size(), reference.size()) << world << " ranks";
    for (size_t i = 0; i < model.size(); ++i) {
      EXPECT_EQ(model[i].first, reference[i].first);
      EXPECT_TRUE(testing::all_close(model[i].second.to_floats(), reference[i].second.to_floats(),
                                     1e-5f, 1e-5f))
          << model[i].first << " with " << world << " ranks";
    }
  }
}

// The valid_ppl lines of a run's metrics.jsonl, by step.
std::map<int64_t, double> valid_ppl_by_step(const std::string& run_dir) {
  std::map<int64_t, double> out;
  std::istringstream lines(read_file(run_dir + "/metrics.jsonl"));
  for (std::string line; std::getline(lines, line);) {
    const nlohmann::json j = nlohmann::json::parse(line);
    if (j.contains("valid_ppl")) out[j.at("step").get<int64_t>()] = j.at("valid_ppl").get<double>();
  }
  return out;
}

// Sharded tables (docs/ARCHITECTURE.md "Sharded storage"): each rank stores its hot head, its
// own tail rows and a step cache, never the whole table; the full-softmax evaluation during and
// after training is distributed (each rank scores its rows) and gives one rank's perplexity.
TEST(TrainDist, ShardedTablesEvaluateTogetherLikeOneRank) {
  const std::string dir = testing::temp_dir("train_dist_sharded_eval");
  const std::string extra = " --set train.eval_every=3";
  const auto one =
      run_elmo("--config " + write_config(dir + "/1", dist_config(dir + "/1/run", 6, 0)) + extra);
  ASSERT_EQ(one.status, 0) << one.output;
  const auto four =
      run_elmo("--config " + write_config(dir + "/4", dist_config(dir + "/4/run", 6, 0)) + extra +
               " --nodes 1 --workers_per_node 4");
  ASSERT_EQ(four.status, 0) << four.output;
  // 153 ids, 15 hot (dist.hot_coverage 0.5 of this corpus): rank 0 owns 35 of the 138 tail rows.
  EXPECT_NE(four.output.find("embedding rows stored: 90 of 153 (15 hot + 35 own + a step cache"),
            std::string::npos)
      << four.output;
  EXPECT_NE(four.output.find("softmax rows stored: 130 of 153"), std::string::npos) << four.output;
  const auto two =
      run_elmo("--config " + write_config(dir + "/2", dist_config(dir + "/2/run", 6, 0)) + extra +
               " --nodes 1 --workers_per_node 2");
  ASSERT_EQ(two.status, 0) << two.output;
  const auto summary = [](const std::string& run) {
    return nlohmann::json::parse(read_file(run + "/summary.json"));
  };
  const auto a = valid_ppl_by_step(dir + "/1/run");
  const nlohmann::json s1 = summary(dir + "/1/run");
  ASSERT_EQ(a.size(), 2u);  // step 3 and the end
  for (const std::string world : {"2", "4"}) {
    const auto b = valid_ppl_by_step(dir + "/" + world + "/run");
    ASSERT_EQ(b.size(), 2u) << world << " ranks";
    for (const auto& [step, ppl] : a)
      EXPECT_NEAR(b.at(step), ppl, 1e-5 * ppl) << "step " << step << ", " << world << " ranks";
    const nlohmann::json s = summary(dir + "/" + world + "/run");
    for (const char* key : {"ppl", "ppl_fwd", "ppl_bwd"})
      EXPECT_NEAR(s["valid"][key].get<double>(), s1["valid"][key].get<double>(),
                  1e-5 * s1["valid"][key].get<double>())
          << key << ", " << world << " ranks";
    EXPECT_EQ(s["valid"]["tokens"], s1["valid"]["tokens"]);
    // Every rank's table bytes and peak memory; a rank holds less than every row.
    ASSERT_EQ(s["table_bytes_per_rank"].size(), std::stoul(world));
    ASSERT_EQ(s["peak_host_memory_bytes_per_rank"].size(), std::stoul(world));
    EXPECT_LT(s["table_bytes"]["host"].get<int64_t>(), s["table_bytes"]["every_row"].get<int64_t>());
    for (const auto& peak : s["peak_host_memory_bytes_per_rank"]) EXPECT_GT(peak.get<int64_t>(), 0);
  }
}

// --init-from on sharded ranks: each rank copies its home rows (values and, with
// --init-optimizer, accumulators) from the source, so 4 ranks continue like one process.
TEST(TrainDist, InitFromFillsEachRanksOwnRows) {
  const std::string dir = testing::temp_dir("train_dist_init_from");
  const auto source =
      run_elmo("--config " + write_config(dir + "/src", dist_config(dir + "/src/run", 3, 3)));
  ASSERT_EQ(source.status, 0) << source.output;
  const std::string init = " --init-from " + dir + "/src/run --init-optimizer";
  const auto one = run_elmo(
      "--config " + write_config(dir + "/1", dist_config(dir + "/1/run", 4, 4)) + init);
  ASSERT_EQ(one.status, 0) << one.output;
  const auto four =
      run_elmo("--config " + write_config(dir + "/4", dist_config(dir + "/4/run", 4, 4)) + init +
               " --nodes 1 --workers_per_node 4");
  ASSERT_EQ(four.status, 0) << four.output;
  EXPECT_NE(four.output.find("init: weights from"), std::string::npos) << four.output;
  expect_same_models(dir + "/4/run", dir + "/1/run");
}

// The full softmax reads every row at every step, so its table keeps the whole layout (rows
// owned elsewhere are a step old on each rank): the root evaluates the checkpoint of the step,
// and 2 ranks report the perplexities of one.
TEST(TrainDist, FullSoftmaxRanksEvaluateLikeOneRank) {
  const std::string dir = testing::temp_dir("train_dist_full_eval");
  const std::string extra = " --set train.eval_every=3 --set softmax.type=full";
  const auto one =
      run_elmo("--config " + write_config(dir + "/1", dist_config(dir + "/1/run", 6, 0)) + extra);
  ASSERT_EQ(one.status, 0) << one.output;
  const auto two =
      run_elmo("--config " + write_config(dir + "/2", dist_config(dir + "/2/run", 6, 0)) + extra +
               " --nodes 1 --workers_per_node 2");
  ASSERT_EQ(two.status, 0) << two.output;
  const auto a = valid_ppl_by_step(dir + "/1/run"), b = valid_ppl_by_step(dir + "/2/run");
  ASSERT_EQ(a.size(), 2u);  // step 3 and the end
  ASSERT_EQ(b.size(), 2u);
  for (const auto& [step, ppl] : a) EXPECT_NEAR(b.at(step), ppl, 1e-5 * ppl) << "step " << step;
}

// Checkpoints stay one shard per rank and load into any world size, the rows dealt again: a
// checkpoint written by 4 ranks resumes on 2 and on 1 with the very parameters it holds.
TEST(TrainDist, AFourRankCheckpointResumesOnTwoAndOneRanks) {
  const std::string dir = testing::temp_dir("train_dist_redeal");
  const std::string run4 = dir + "/4/run";
  const std::string config = write_config(dir + "/4", dist_config(run4, 3, 3));
  const auto four = run_elmo("--config " + config + " --nodes 1 --workers_per_node 4");
  ASSERT_EQ(four.status, 0) << four.output;
  EXPECT_TRUE(fs::exists(run4 + "/checkpoints/step-3/shard-3.safetensors"));
  const NamedTensors written = final_model(run4);
  const CheckpointData written_all = load_checkpoint(run4);
  for (const std::string world : {"2", "1"}) {
    // A copy of the run resumed with no step left to train: its final checkpoint holds what
    // the resumed ranks loaded.
    const std::string run = dir + "/on" + world + "/run";
    fs::create_directories(dir + "/on" + world);
    fs::copy(run4, run, fs::copy_options::recursive);
    const std::string launch = world == "1" ? "" : " --nodes 1 --workers_per_node " + world;
    const auto r = run_elmo("--config " + config + launch + " --resume --set run.dir=" + run +
                            " --set train.eval_every=0");
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("resumed from step 3"), std::string::npos) << r.output;
    const CheckpointData loaded = load_checkpoint(run);
    EXPECT_EQ(loaded.step, 3);
    EXPECT_EQ(loaded.state.at("world_size").get<int64_t>(), std::stoll(world));  // rewritten
    for (const char* file : {"model", "optimizer"}) {
      const NamedTensors* a = written_all.file(file);
      const NamedTensors* b = loaded.file(file);
      ASSERT_TRUE(a && b) << file;
      ASSERT_EQ(a->size(), b->size()) << file;
      for (size_t i = 0; i < a->size(); ++i) {
        EXPECT_EQ((*a)[i].first, (*b)[i].first);
        EXPECT_EQ((*a)[i].second.to_floats(), (*b)[i].second.to_floats())
            << file << " " << (*a)[i].first << " after resuming on " << world << " rank(s)";
      }
    }
  }
  EXPECT_FALSE(written.empty());
}

// One process refuses, before reading anything, a sharded checkpoint whose files are larger than
// the memory it has, and names the distributed command that evaluates it instead. The shard is
// made that large by extending it sparsely (no disk used): the check reads the files' sizes.
TEST(TrainDist, AOneProcessLoadThatCannotFitNamesTheDistributedCommand) {
  const std::string dir = testing::temp_dir("train_dist_too_big");
  const std::string run = dir + "/run";
  const auto two = run_elmo("--config " + write_config(dir, dist_config(run, 2, 2)) +
                            " --nodes 1 --workers_per_node 2");
  ASSERT_EQ(two.status, 0) << two.output;
  const std::string shard = run + "/checkpoints/step-2/shard-1.safetensors";
  ASSERT_TRUE(fs::exists(shard));
  const HostMemoryAvailable available = host_memory_available();
  ASSERT_GT(available.bytes, 0) << "no MemAvailable here";
  const std::string text = testing::write_text_file(dir, "held_out.txt", "a b c\n");
  const std::string before = read_file(run + "/checkpoints/step-2/model.safetensors");
  fs::resize_file(shard, static_cast<uintmax_t>(available.bytes) * 2);
  for (const std::string& command :
       {"eval --checkpoint " + run + " --corpus " + text,
        "export-bilm --checkpoint " + run + "/checkpoints/step-2 --out " + dir + "/w.hdf5"}) {
    const auto r = run_elmo(command);
    EXPECT_EQ(r.status, 2) << command << "\n" << r.output;
    EXPECT_THAT(r.output, HasSubstr("was written by 2 ranks, each holding its rows"));
    EXPECT_THAT(r.output, HasSubstr("--resume --nodes 1 --workers_per_node 2 --set run.dir=" +
                                    run + " --set data.test=FILE"));
  }
  EXPECT_FALSE(fs::exists(dir + "/w.hdf5"));
  EXPECT_EQ(read_file(run + "/checkpoints/step-2/model.safetensors"), before);
  // A checkpoint that fits still loads: the same run with the shard back to its size.
  fs::remove_all(run);
  ASSERT_EQ(run_elmo("--config " + dir + "/run.toml --nodes 1 --workers_per_node 2").status, 0);
  const auto r = run_elmo("eval --checkpoint " + run + " --corpus " + text);
  EXPECT_EQ(r.status, 0) << r.output;
}

// A rank resuming a checkpoint written by as many ranks reads only its own shard: its share is
// the replicated rows followed by its shard's rows, exactly its home rows of the whole tables,
// and another rank's damaged shard does not stop it (that rank's own load would).
TEST(TrainDist, ASameSizeResumeReadsOnlyTheRanksOwnShard) {
  const std::string dir = testing::temp_dir("train_dist_own_shard");
  const std::string run = dir + "/run";
  const auto four = run_elmo("--config " + write_config(dir, dist_config(run, 3, 3)) +
                             " --nodes 1 --workers_per_node 4");
  ASSERT_EQ(four.status, 0) << four.output;
  const CheckpointData whole = load_checkpoint(run);
  const int64_t hot = whole.state.at("shards").at("hot_rows").get<int64_t>();
  const int64_t vocab = whole.state.at("vocab_size").get<int64_t>();
  ASSERT_GT(hot, 0);
  ASSERT_EQ(whole.part_rank, -1);
  // Damage rank 2's shard (its last bytes: tensor data) after the whole load above.
  const std::string step_dir = whole.dir;
  {
    std::fstream f(step_dir + "/shard-2.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-8, std::ios::end);
    f.write("garbage!", 8);
  }
  EXPECT_THROW(load_checkpoint(run), Error);
  const CheckpointData mine = load_checkpoint(run, CheckpointPart{1, 4, hot});
  ASSERT_EQ(mine.part_rank, 1);
  for (const char* file : {"model", "optimizer"}) {
    const NamedTensors* all = whole.file(file);
    const NamedTensors* part = mine.file(file);
    ASSERT_TRUE(all && part) << file;
    for (const auto& [name, tensor] : *all) {
      const Tensor* got = nullptr;
      for (const auto& [n, t] : *part)
        if (n == name) got = &t;
      ASSERT_NE(got, nullptr) << file << " " << name;
      if (tensor.ndim() == 0 || tensor.size(0) != vocab) {  // dense: the same tensor
        EXPECT_EQ(got->to_floats(), tensor.to_floats()) << name;
        continue;
      }
      // Rank 1 of 4 owns ids hot + 1 + 4k: its share is rows [0, hot) then those.
      const int64_t width = tensor.numel() / vocab;
      const std::vector<float> a = tensor.to_floats(), b = got->to_floats();
      const int64_t owned = (vocab - hot - 1 + 3) / 4;
      ASSERT_EQ(got->size(0), hot + owned) << name;
      for (int64_t s = 0; s < hot + owned; ++s) {
        const int64_t id = s < hot ? s : hot + 1 + (s - hot) * 4;
        ASSERT_TRUE(std::equal(b.begin() + s * width, b.begin() + (s + 1) * width,
                               a.begin() + id * width))
            << file << " " << name << " slot " << s;
      }
    }
  }
  // Another world size or hot head: the whole checkpoint (here: the damaged shard is read).
  EXPECT_THROW(load_checkpoint(run, CheckpointPart{1, 2, hot}), Error);
  EXPECT_THROW(load_checkpoint(run, CheckpointPart{1, 4, hot + 1}), Error);
}

// Contiguous packing (the TF PTB tutorial's rows) over an epoch end: one rank and two ranks
// split the same rows and both restart them from zero state, so they reach the same parameters.
TEST(TrainDist, ContiguousPackingOneAndTwoRanksAgreeAcrossAnEpochEnd) {
  const std::string dir = testing::temp_dir("train_dist_contiguous");
  const std::string sets =
      " --set data.packing=contiguous --set data.shuffle=false --set model.bidirectional=false"
      " --set synthetic.train_sentences=40";
  const int64_t steps = 12;
  const auto one = run_elmo("--config " +
                            write_config(dir + "/1", dist_config(dir + "/1/run", steps, 6)) + sets);
  ASSERT_EQ(one.status, 0) << one.output;
  const auto two =
      run_elmo("--config " + write_config(dir + "/2", dist_config(dir + "/2/run", steps, 6)) +
               sets + " --nodes 2 --workers_per_node 1");
  ASSERT_EQ(two.status, 0) << two.output;
  const auto state = nlohmann::json::parse(
      read_file(dir + "/2/run/checkpoints/step-" + std::to_string(steps) + "/state.json"));
  ASSERT_GE(state.at("batcher").at("epoch").get<int64_t>(), 1) << "the run must cross an epoch";
  expect_same_models(dir + "/2/run", dir + "/1/run");
}

// A rank draws the next step's batch and samples one step ahead. Its checkpoints still hold the
// batcher and sampler positions after their own steps (a mid-run checkpoint and the final one of
// a shorter run agree, the sampler at the replayed draws of those steps), and resuming from
// either reaches the parameters of the uninterrupted run exactly (same world size).
TEST(TrainDist, ResumeFromAMidRunOrAFinalCheckpointIsExact) {
  const std::string dir = testing::temp_dir("train_dist_resume");
  const std::string launch = " --nodes 2 --workers_per_node 1";
  const std::string straight = dir + "/straight/run", shorter = dir + "/short/run";
  const std::string config = write_config(dir + "/straight", dist_config(straight, 8, 4));
  const auto a = run_elmo("--config " + config + launch);
  ASSERT_EQ(a.status, 0) << a.output;
  const auto b = run_elmo("--config " + config + launch + " --set run.dir=" + shorter +
                          " --set train.max_steps=4");
  ASSERT_EQ(b.status, 0) << b.output;
  const auto state_at = [](const std::string& run, int step) {
    return nlohmann::json::parse(
        read_file(run + "/checkpoints/step-" + std::to_string(step) + "/state.json"));
  };
  const nlohmann::json mid = state_at(straight, 4), last = state_at(shorter, 4);
  EXPECT_EQ(mid.at("batcher"), last.at("batcher"));
  const nlohmann::json position =  // run.seed = 5, softmax.samples = 40
      testing::sampler_position_after(5, mid.at("vocab_size").get<int64_t>(), 40, 4);
  EXPECT_EQ(mid.at("sampler_rng"), position);
  EXPECT_EQ(last.at("sampler_rng"), position);

  // The straight run cut back to its mid-run checkpoint, and the shorter run, continue to 8.
  const std::string cut = dir + "/cut/run";
  fs::create_directories(dir + "/cut");
  fs::copy(straight, cut, fs::copy_options::recursive);
  fs::remove_all(cut + "/checkpoints/step-8");
  write_file_atomic(cut + "/checkpoints/latest", "step-4\n");
  for (const std::string& run : {cut, shorter}) {
    const auto r = run_elmo("--config " + config + launch + " --resume --set run.dir=" + run);
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("resumed from step 4"), std::string::npos) << r.output;
    for (const char* file : {"model.safetensors", "optimizer.safetensors", "shard-0.safetensors",
                             "shard-1.safetensors"})
      EXPECT_TRUE(read_file(straight + "/checkpoints/step-8/" + file) ==
                  read_file(run + "/checkpoints/step-8/" + file))
          << file << " differs after resuming " << run;
  }
}

// README "On a cluster": a scheduler for 2 nodes and two workers (one rank each) on loopback.
TEST(TrainDist, SchedulerAndWorkersTrainTogether) {
  const std::string dir = testing::temp_dir("train_dist_cluster");
  const std::string run = dir + "/run";
  const std::string config = write_config(dir, dist_config(run, 4, 0));
  const std::string port = std::to_string(testing::free_port());
  const std::string env = "env ELMO_JOB_TOKEN=my-secret-token ";
  const std::string where = " --root_uri 127.0.0.1 --root_port " + port + " --world_size 2";
  Background scheduler(env + ELMO_BINARY + " --role scheduler" + where, dir + "/scheduler.log");
  Background worker(env + ELMO_BINARY + " --config " + config + " --role worker" + where,
                    dir + "/worker0.log");
  const auto other = testing::run_command(env + ELMO_BINARY + " --config " + config +
                                          " --role worker" + where + " 2>&1");
  EXPECT_EQ(other.status, 0) << other.output;
  EXPECT_EQ(worker.wait(60.0), 0) << worker.output();
  EXPECT_EQ(scheduler.wait(60.0), 0) << scheduler.output();
  EXPECT_EQ(load_checkpoint(run).step, 4);
  const std::string logs = worker.output() + other.output;
  EXPECT_NE(logs.find("done: 4 steps"), std::string::npos) << logs;
}

// bf16 sums are NCCL's: CPU ranks refuse the setting with a message naming it, before training.
TEST(TrainDist, Bf16AllreduceOnCpuRanksIsAUsageError) {
  const std::string dir = testing::temp_dir("train_dist_bf16");
  const auto r = run_elmo("--config " + write_config(dir, dist_config(dir + "/run", 2, 0)) +
                          " --nodes 1 --workers_per_node 2 --set dist.allreduce_precision=bf16");
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("dist.allreduce_precision = \"bf16\" needs GPU ranks"),
            std::string::npos)
      << r.output;
  EXPECT_FALSE(find_latest_checkpoint(dir + "/run").has_value());
}

TEST(TrainDist, WrongJobTokenIsRefused) {
  const std::string dir = testing::temp_dir("train_dist_token");
  const std::string config = write_config(dir, dist_config(dir + "/run", 4, 0));
  const int port = testing::free_port();
  Background scheduler(std::string(ELMO_BINARY) + " --role scheduler --root_uri 127.0.0.1" +
                           " --root_port " + std::to_string(port) +
                           " --world_size 1 --job_token right",
                       dir + "/scheduler.log");
  const auto worker = run_elmo("--config " + config + " --role worker --root_uri 127.0.0.1" +
                               " --root_port " + std::to_string(port) +
                               " --world_size 1 --job_token wrong --set dist.timeout_seconds=10");
  EXPECT_NE(worker.status, 0) << worker.output;
  EXPECT_NE(worker.output.find("job token"), std::string::npos) << worker.output;
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_NE(scheduler.output().find("refused"), std::string::npos) << scheduler.output();
}

TEST(TrainDist, MissingRankTimesOutNamingIt) {
  const std::string dir = testing::temp_dir("train_dist_missing");
  const std::string config = write_config(dir, dist_config(dir + "/run", 4, 0));
  const int port = testing::free_port();
  const auto start = Clock::now();
  const auto r = testing::run_command(env_rank(0, 2, port) + " --config " + config +
                                      " --set dist.timeout_seconds=3 2>&1");
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("rank 1"), std::string::npos) << r.output;
  EXPECT_LT(seconds, 30.0) << r.output;
}

// Must-show: a rank killed mid-run makes every other rank exit non-zero within 30 s naming it,
// no process stays behind, and --resume continues from the last checkpoint.
TEST(TrainDist, KilledRankStopsTheOthersAndResumeContinues) {
  const std::string dir = testing::temp_dir("train_dist_kill");
  const std::string run = dir + "/run";
  const std::string config = write_config(dir, dist_config(run, 5000, 4));
  const int port = testing::free_port();
  std::vector<std::unique_ptr<Background>> ranks;
  for (int r = 0; r < 3; ++r)
    ranks.push_back(std::make_unique<Background>(env_rank(r, 3, port) + " --config " + config,
                                                 dir + "/rank" + std::to_string(r) + ".log"));
  const auto deadline = Clock::now() + std::chrono::seconds(120);
  while (!fs::exists(run + "/checkpoints/latest") && Clock::now() < deadline && ranks[0]->running())
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_TRUE(fs::exists(run + "/checkpoints/latest")) << ranks[0]->output();
  ASSERT_TRUE(ranks[1]->running()) << ranks[1]->output();
  ::kill(ranks[1]->pid(), SIGKILL);
  const auto killed_at = Clock::now();
  for (int r : {0, 2}) {
    const int code = ranks[r]->wait(30.0);
    EXPECT_NE(code, -1) << "rank " << r << " still running 30 s after rank 1 was killed";
    EXPECT_NE(code, 0) << ranks[r]->output();
    EXPECT_NE(ranks[r]->output().find("rank 1"), std::string::npos) << ranks[r]->output();
  }
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - killed_at).count(), 30.0);
  for (auto& rank : ranks) EXPECT_FALSE(rank->running());

  const CheckpointData last = load_checkpoint(run);
  const int64_t resume_to = last.step + 4;
  std::vector<std::unique_ptr<Background>> again;
  const int port2 = testing::free_port();
  for (int r = 0; r < 3; ++r)
    again.push_back(std::make_unique<Background>(
        env_rank(r, 3, port2) + " --config " + config + " --resume --set train.max_steps=" +
            std::to_string(resume_to),
        dir + "/resume" + std::to_string(r) + ".log"));
  for (int r = 0; r < 3; ++r) EXPECT_EQ(again[r]->wait(120.0), 0) << again[r]->output();
  EXPECT_NE(again[0]->output().find("resumed from step " + std::to_string(last.step)),
            std::string::npos)
      << again[0]->output();
  EXPECT_EQ(load_checkpoint(run).step, resume_to);
}

// A NaN in the last rank's gradient (steps 7, 9) or loss (step 8) reaches every rank through the
// summed norm and loss: every rank skips the same steps, goes back to the same checkpoint after
// train.max_bad_steps of them, and 2 ranks end where 1 rank does.
TEST(TrainDist, NonFiniteStepsAreSkippedAndReloadedAlikeOnEveryRank) {
  const std::string dir = testing::temp_dir("train_dist_nan");
  const std::string poison = "ELMO_INJECT_NAN_STEPS=7,loss:8,9 ";
  for (const char* world : {"1", "2"}) {
    const std::string launch = std::string(world) == "2" ? " --nodes 2 --workers_per_node 1" : "";
    const auto r = testing::run_command(
        poison + testing::elmo_binary() + " --config " +
        write_config(dir + "/" + world, dist_config(dir + "/" + world + "/run", 12, 6)) + launch);
    ASSERT_EQ(r.status, 0) << r.output;
    const auto summary = nlohmann::json::parse(read_file(dir + "/" + world + "/run/summary.json"));
    EXPECT_EQ(summary["skipped_steps"], 3) << world;
    EXPECT_EQ(summary["bad_step_reloads"], 1) << world;
    if (std::string(world) == "2") {
      for (const char* rank : {"rank 0/2", "rank 1/2"}) {
        EXPECT_NE(r.output.find(std::string(rank) + "] warning: went back to checkpoint"),
                  std::string::npos)
            << rank << ": " << r.output;
      }
    }
  }
  const NamedTensors one = final_model(dir + "/1/run"), two = final_model(dir + "/2/run");
  ASSERT_EQ(one.size(), two.size());
  for (size_t i = 0; i < one.size(); ++i)
    EXPECT_TRUE(
        testing::all_close(two[i].second.to_floats(), one[i].second.to_floats(), 1e-5f, 1e-5f))
        << one[i].first;
}

// A launched job whose rank dies: rank 0 cannot write the report, so the local launcher, which
// outlives its ranks, writes it from the run folder's files.
TEST(TrainDist, TheLauncherWritesTheReportWhenARankDies) {
  const std::string dir = testing::temp_dir("train_dist_report");
  const std::string run = dir + "/run";
  const std::string config = write_config(dir, dist_config(run, 5000, 0));
  Background launcher(
      std::string(ELMO_BINARY) + " --config " + config + " --nodes 1 --workers_per_node 2",
      dir + "/launcher.log");
  const auto deadline = Clock::now() + std::chrono::seconds(120);
  while (!(fs::exists(run + "/metrics.jsonl") && fs::file_size(run + "/metrics.jsonl") > 0) &&
         Clock::now() < deadline && launcher.running())
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_TRUE(fs::exists(run + "/metrics.jsonl")) << launcher.output();
  const auto children = testing::run_command("pgrep -P " + std::to_string(launcher.pid()));
  const int64_t rank_pid = std::atoll(children.output.c_str());
  ASSERT_GT(rank_pid, 0) << children.output;
  ::kill(static_cast<pid_t>(rank_pid), SIGKILL);
  const int code = launcher.wait(60.0);
  EXPECT_NE(code, -1) << "the launcher still runs 60 s after a rank was killed";
  EXPECT_NE(code, 0) << launcher.output();
  EXPECT_NE(launcher.output().find("report: " + run + "/report.html"), std::string::npos)
      << launcher.output();
  EXPECT_NE(read_file(run + "/report.html").find("data-series=\"loss\""), std::string::npos);
}

}  // namespace
}  // namespace elmo
