// Crashes and full disks (issue 15, docs/FAULTS.md): the trainer killed with SIGKILL at many
// moments of a run that checkpoints every step always leaves a complete checkpoint whose
// checksums verify, and --resume finishes; a checkpoint that does not fit on the disk (a small
// tmpfs mounted over run.dir/checkpoints in a private mount namespace) leaves the previous one
// and `latest` intact and stops the run with a clear error, or with
// checkpoint.on_write_error = "warn" keeps training and says so; no partial folder stays.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "io/atomic_file.h"
#include "io/checkpoint.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using testing::run_command;

std::string config_text(const std::string& run_dir) {
  return "[run]\ndir = \"" + run_dir +
         "\"\nseed = 5\n"
         "[synthetic]\nvocab_size = 150\nclasses = 4\ntrain_sentences = 3000\n"
         "valid_sentences = 100\n"
         "[model]\nembedding_dim = 16\ncell_size = 32\nprojection_dim = 16\nlayers = 2\n"
         "dropout = 0.1\n"
         "[softmax]\ntype = \"sampled\"\nsamples = 40\n"
         "[train]\nbatch_size = 8\nunroll_steps = 10\nmax_steps = 8\nthreads = 1\n"
         "log_every = 1\ndevice = \"cpu\"\n"
         "[checkpoint]\nevery_steps = 2\nkeep_last = 0\n"
         "[eval]\nbatch_size = 4\nmax_tokens = 200\n"
         "[dist]\ntimeout_seconds = 20\nhot_coverage = 0.5\n";
}

std::string write_config(const std::string& dir, const std::string& run_dir) {
  const std::string path = dir + "/run.toml";
  write_file_atomic(path, config_text(run_dir));
  return path;
}

// Names in the checkpoints folder that a finished save leaves nowhere: "*.tmp-*", "*.pending".
std::vector<std::string> leftovers(const std::string& ckpt_dir) {
  std::vector<std::string> found;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(ckpt_dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.find(".tmp-") != std::string::npos || name.find(".pending") != std::string::npos)
      found.push_back(name);
  }
  return found;
}

// Bytes a checkpoint of this config takes on a tmpfs (whole 4 KiB pages per file).
uintmax_t checkpoint_pages_bytes(const std::string& dir) {
  const std::string run = dir + "/size";
  const auto r = testing::run_elmo("--config " + write_config(dir, run) +
                                   " --set train.max_steps=2 --set run.dir=" + run);
  EXPECT_EQ(r.status, 0) << r.output;
  uintmax_t bytes = 0;
  for (const auto& e : fs::directory_iterator(run + "/checkpoints/step-2"))
    bytes += (fs::file_size(e.path()) + 4095) / 4096 * 4096;
  return bytes;
}

// Runs `script` (sh) in a private mount namespace with a tmpfs of `size_bytes` mounted over
// `mount_point`; the script's exit status, or 77 when the namespace or the mount is refused.
int run_with_small_disk(const std::string& dir, const std::string& mount_point,
                        uintmax_t size_bytes, const std::string& script) {
  const std::string path = dir + "/script.sh";
  write_file_atomic(path, "set -u\nmount -t tmpfs -o size=" + std::to_string(size_bytes) +
                              " elmo-small-disk " + mount_point + " || exit 77\n" + script);
  const auto r = run_command("unshare --mount sh " + path);
  return r.status;
}

// Whether this process may make a private mount namespace and mount a tmpfs in it (root, or
// an unprivileged user namespace); the disk tests skip, saying so, when it cannot.
std::string small_disk_unavailable() {
  const std::string dir = testing::temp_dir("tmpfs_probe");
  const auto r =
      run_command("unshare --mount sh -c 'mount -t tmpfs -o size=65536 probe " + dir + "' 2>&1");
  if (r.status == 0) return "";
  return "cannot mount a tmpfs in a private mount namespace here (needs root or user "
         "namespaces): " +
         r.output;
}

TEST(Faults, ACheckpointThatDoesNotFitStopsTheRunAndKeepsThePreviousOne) {
  const std::string why = small_disk_unavailable();
  if (!why.empty()) GTEST_SKIP() << why;
  for (const char* world : {"1", "2"}) {
    SCOPED_TRACE(std::string(world) + " rank(s)");
    const std::string dir = testing::temp_dir(std::string("disk_full_stop_") + world);
    const uintmax_t one = checkpoint_pages_bytes(dir);
    const std::string run = dir + "/run", ckpt = run + "/checkpoints", copy = dir + "/copy";
    fs::create_directories(ckpt);
    const std::string launch =
        std::string(world) == "2" ? " --nodes 2 --workers_per_node 1" : std::string();
    // Room for one checkpoint and a half: step 2 fits, step 4 does not.
    const int status = run_with_small_disk(
        dir, ckpt, one + one / 2,
        testing::elmo_binary() + " --config " + write_config(dir, run) + launch + " >" + dir +
            "/log 2>&1\necho $? >" + dir + "/status\ncp -a " + ckpt + " " + copy + "\n");
    if (status == 77) GTEST_SKIP() << "the tmpfs mount was refused";
    ASSERT_EQ(status, 0);
    const std::string log = read_file(dir + "/log");
    EXPECT_EQ(read_file(dir + "/status"), "1\n") << log;
    EXPECT_NE(log.find("the checkpoint of step 4 could not be written"), std::string::npos) << log;
    EXPECT_NE(log.find("No space left on device"), std::string::npos) << log;
    EXPECT_NE(
        log.find("the previous checkpoint " + ckpt + "/step-2 and " + ckpt + "/latest are intact"),
        std::string::npos)
        << log;
    EXPECT_EQ(log.find("terminate called"), std::string::npos) << log;
    EXPECT_EQ(read_file(copy + "/latest"), "step-2\n");
    EXPECT_TRUE(leftovers(copy).empty()) << leftovers(copy).front();
    EXPECT_FALSE(fs::exists(copy + "/step-4"));
    EXPECT_EQ(load_checkpoint(copy).step, 2);  // complete, and its checksums verify
  }
}

TEST(Faults, WithOnWriteErrorWarnTheRunTrainsOnPastAFullDisk) {
  const std::string why = small_disk_unavailable();
  if (!why.empty()) GTEST_SKIP() << why;
  const std::string dir = testing::temp_dir("disk_full_warn");
  const uintmax_t one = checkpoint_pages_bytes(dir);
  const std::string run = dir + "/run", ckpt = run + "/checkpoints", copy = dir + "/copy";
  fs::create_directories(ckpt);
  // A filler leaves room for one checkpoint and a half; once the run has said that a checkpoint
  // failed, the filler goes and the later checkpoints fit.
  const std::string script = "head -c " + std::to_string(8 * one - one - one / 2) + " /dev/zero >" +
                             ckpt + "/filler\n" + testing::elmo_binary() + " --config " +
                             write_config(dir, run) +
                             " --set train.max_steps=60 --set checkpoint.keep_last=2"
                             " --set checkpoint.on_write_error=warn >" +
                             dir +
                             "/log 2>&1 &\n"
                             "trainer=$!\n"
                             "for i in $(seq 1 1200); do\n"
                             "  grep -q 'training continues' " +
                             dir +
                             "/log && break\n"
                             "  sleep 0.05\n"
                             "done\n"
                             "rm -f " +
                             ckpt +
                             "/filler\n"
                             "wait $trainer\necho $? >" +
                             dir + "/status\ncp -a " + ckpt + " " + copy + "\n";
  const int status = run_with_small_disk(dir, ckpt, 8 * one, script);
  if (status == 77) GTEST_SKIP() << "the tmpfs mount was refused";
  ASSERT_EQ(status, 0);
  const std::string log = read_file(dir + "/log");
  EXPECT_EQ(read_file(dir + "/status"), "0\n") << log;
  EXPECT_NE(log.find("the checkpoint of step 4 could not be written"), std::string::npos) << log;
  EXPECT_NE(log.find("training continues (checkpoint.on_write_error = \"warn\")"),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("step 5/60"), std::string::npos) << "trained past the failure: " << log;
  EXPECT_EQ(read_file(copy + "/latest"), "step-60\n");
  EXPECT_TRUE(leftovers(copy).empty()) << leftovers(copy).front();
  EXPECT_EQ(load_checkpoint(copy).step, 60);
}

// A trainer started in the background (its own process group) with its output in a file.
class Trainer {
 public:
  Trainer(const std::string& args, const std::string& log) : log_(log) {
    pid_ = ::fork();
    if (pid_ == 0) {
      ::setpgid(0, 0);
      const std::string line = "exec " + testing::elmo_binary() + " " + args + " >" + log + " 2>&1";
      ::execl("/bin/sh", "sh", "-c", line.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
  }
  ~Trainer() { kill(); }
  // Waits until the log holds `text` (true) or the process ended or `seconds` passed (false).
  bool wait_for_log(const std::string& text, double seconds) {
    const auto end = Clock::now() + std::chrono::duration<double>(seconds);
    while (Clock::now() < end) {
      if (fs::exists(log_) && read_file(log_).find(text) != std::string::npos) return true;
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        done_ = true;
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return false;
  }
  void signal(int number) { ::kill(pid_, number); }
  // Exit status (128 + signal when killed), or -1 when still running after `seconds`.
  int wait(double seconds) {
    const auto end = Clock::now() + std::chrono::duration<double>(seconds);
    int status = 0;
    while (Clock::now() < end) {
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        done_ = true;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return -1;
  }
  // SIGKILL, then reaps it; whether it was still running.
  bool kill() {
    if (done_) return false;
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    done_ = true;
    return WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
  }

 private:
  std::string log_;
  pid_t pid_ = -1;
  bool done_ = false;
};

// SIGKILL at 25 moments spread over the training loop of a run that checkpoints every step
// (each save is most of a step here: three fsynced files and two renames): after every kill the
// run folder holds a complete checkpoint whose checksums verify, and --resume finally finishes.
// The killed runs aim at a step count they cannot reach in 25 x 400 ms (a fast machine finished
// 200 steps after 7 kills); the final --resume trains 20 steps past the last checkpoint.
TEST(Faults, SigkillAtAnyMomentLeavesAVerifiedCheckpointAndResumeFinishes) {
  const std::string dir = testing::temp_dir("sigkill");
  const std::string run = dir + "/run", ckpt = run + "/checkpoints";
  const std::string config = write_config(dir, run);
  const std::string common = "--config " + config +
                             " --set checkpoint.every_steps=1 --set checkpoint.keep_last=2 "
                             "--set train.log_every=1000";
  const std::string args = common + " --set train.max_steps=1000000";
  std::mt19937 rng(15);  // fixed: a failure names its kill and delay
  std::uniform_int_distribution<int> delay_ms(0, 400);
  int kills = 0, mid_save = 0;
  int64_t last_step = 0;
  for (int k = 0; k < 25; ++k) {
    const bool resume = find_latest_checkpoint(run).has_value();
    Trainer trainer(args + (resume ? " --resume" : ""), dir + "/log-" + std::to_string(k));
    ASSERT_TRUE(trainer.wait_for_log(" steps of ", 60.0))
        << "kill " << k
        << ": the trainer did not start training: " << read_file(dir + "/log-" + std::to_string(k));
    const int delay = delay_ms(rng);
    std::this_thread::sleep_for(std::chrono::milliseconds(delay));
    if (!trainer.kill()) break;  // it finished first: nothing left to kill
    ++kills;
    mid_save += !leftovers(ckpt).empty();
    try {
      const CheckpointData data = load_checkpoint(run);  // complete, checksums verified
      EXPECT_GE(data.step, last_step) << "kill " << k << " after " << delay << " ms";
      last_step = data.step;
    } catch (const Error& e) {
      ADD_FAILURE() << "kill " << k << " after " << delay << " ms: " << e.what();
    }
  }
  EXPECT_GE(kills, 20);
  EXPECT_GE(mid_save, 1) << "no kill landed inside a checkpoint save";
  const int64_t final_steps = last_step + 20;
  const auto r = testing::run_elmo(common + " --set train.max_steps=" +
                                   std::to_string(final_steps) + " --resume");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(load_checkpoint(run).step, final_steps);
  EXPECT_TRUE(leftovers(ckpt).empty()) << leftovers(ckpt).front();
  const auto summary = nlohmann::json::parse(read_file(run + "/summary.json"));
  EXPECT_EQ(summary["steps"], final_steps);
  std::printf("%d kills, %d inside a checkpoint save, last checkpoint before the final run: %lld\n",
              kills, mid_save, static_cast<long long>(last_step));
}

// SIGTERM (or Ctrl-C) finishes the step, saves a checkpoint and exits with 128 + the signal,
// saying how to continue; --resume finishes the run.
TEST(Faults, SigtermSavesACheckpointAndResumeFinishes) {
  const std::string dir = testing::temp_dir("sigterm");
  const std::string run = dir + "/run";
  const std::string args = "--config " + write_config(dir, run) +
                           " --set train.max_steps=2000 --set checkpoint.every_steps=0";
  {
    Trainer trainer(args, dir + "/log");
    ASSERT_TRUE(trainer.wait_for_log("step 3/", 60.0)) << read_file(dir + "/log");
    trainer.signal(SIGTERM);
    EXPECT_EQ(trainer.wait(60.0), 128 + SIGTERM) << read_file(dir + "/log");
  }
  const std::string log = read_file(dir + "/log");
  EXPECT_NE(log.find("stopped by signal 15 at step "), std::string::npos) << log;
  EXPECT_NE(log.find("continue with --resume"), std::string::npos) << log;
  const int64_t step = load_checkpoint(run).step;  // the stop's own checkpoint, verified
  EXPECT_GE(step, 3);
  const auto r =
      testing::run_elmo(args + " --set train.max_steps=" + std::to_string(step + 3) + " --resume");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("resumed from step " + std::to_string(step)), std::string::npos)
      << r.output;
}
}  // namespace
}  // namespace elmo
