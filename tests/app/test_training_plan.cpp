// The training plan (app/training_plan.h) and `elmo_fast plan`: parameter counts equal the
// model's; FLOPs per token equal bench/bench_train_gpu.py's model (503.3 MFLOP at bilm-tf
// sizes) on every shipped config; the host bytes a plan predicts are within 15% of the peak
// resident memory real CPU training runs reach (VmHWM, summary.json) on configs where the
// embedding and softmax tables, the LSTM activations or the full softmax dominate; training
// refuses what cannot fit before allocating it, naming the largest items; the plan command's
// output, probe and bad flags.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "app/session.h"
#include "app/training_plan.h"
#include "io/atomic_file.h"
#include "model/bilm.h"
#include "runtime/host_memory.h"
#include "runtime/rng.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using testing::run_elmo;

TrainingPlan plan_for(const Config& config, int64_t vocab, int world = 1) {
  PlanInputs in;
  in.config = &config;
  in.vocab = vocab;
  in.world_size = world;
  return plan_training(in);
}

TEST(TrainingPlan, ParameterCountsAreTheModels) {
  std::vector<Config> configs(4);
  configs[1].model.projection_dim = 0;  // plain LSTM, forward only, full softmax
  configs[1].model.bidirectional = false;
  configs[1].softmax.type = "full";
  configs[2].model.embedding_dim = 24;
  configs[2].model.layers = 3;
  configs[3].model.cell_size = 40;
  configs[3].model.projection_dim = 8;
  configs[3].model.layers = 1;
  for (Config& c : configs) {
    c.softmax.samples = 50;
    const TrainingPlan plan = plan_for(c, 300);
    const BiLM model(bilm_shape(c, 300), bilm_options(c));
    EXPECT_EQ(plan.parameters, model.params().numel());
    for (const auto& [name, count] : plan.parameter_counts) {
      int64_t expected = 0;
      for (const Parameter* p : model.params().all())
        if (p->name == name || p->name.rfind(name + ".", 0) == 0) expected += p->value.numel();
      EXPECT_EQ(count, expected) << name;
    }
  }
}

TEST(TrainingPlan, FlopsPerTokenAtBilmTfSizes) {
  const Config c = load_config(testing::source_dir() + "/configs/elmo-1b.toml");
  EXPECT_EQ(flops_per_token(c.model, c.softmax, 793471), 503322624.0);  // bench's assert
  ModelConfig plain;  // a PTB-style LSTM: no projection, forward only
  plain.cell_size = 200;
  plain.projection_dim = 0;
  plain.layers = 1;
  plain.bidirectional = false;
  SoftmaxConfig full;
  full.type = "full";
  EXPECT_EQ(flops_per_token(plain, full, 10000), 3.0 * (2 * 200 * 800 * 2 + 2 * 200 * 10000));
}

// bench/bench_train_gpu.py's flops_per_token on each config's effective [model] and [softmax]
// (as `elmo_fast config` prints them) gives the same number as ours.
TEST(TrainingPlan, FlopsMatchTheBenchmarksModel) {
  if (testing::run_command("python3 -c 'import tomllib'").status != 0)
    GTEST_SKIP() << "no python3 with tomllib here";
  int checked = 0;
  for (const auto& entry : fs::directory_iterator(testing::source_dir() + "/configs")) {
    const std::string path = entry.path().string();
    const Config c = load_config(path);
    const std::string script =
        "import sys, tomllib, subprocess; sys.path.insert(0, '" + testing::source_dir() +
        "/bench'); from bench_train_gpu import flops_per_token; "
        "cfg = tomllib.loads(subprocess.run(['" +
        testing::elmo_binary() +
        "', 'config', "
        "'--config', '" +
        path +
        "'], capture_output=True, text=True, check=True).stdout); "
        "print(repr(float(flops_per_token(cfg['model'], cfg['softmax'], 12345))))";
    const auto r = testing::run_command("python3 -c \"" + script + "\"");
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_EQ(std::stod(r.output), flops_per_token(c.model, c.softmax, 12345)) << path;
    ++checked;
  }
  EXPECT_GE(checked, 6);
}

// model/row_layout.h: a process alone stores every row (values and accumulators); a rank its hot
// head, its share of the tail (rank 0's is the largest) and a step cache of fetched rows, with
// accumulators for the hot and own rows only.
TEST(TrainingPlan, TablesDivideOverTheRanks) {
  for (int64_t hot : {0, 4096})
    EXPECT_EQ(table_bytes_per_rank(1000, 16, 1, hot, true, 50), 2 * 1000 * 16 * 4);
  EXPECT_EQ(table_bytes_per_rank(1000, 16, 1, 10, false), 1000 * 16 * 4);
  // 1000 rows, 100 hot, 4 ranks: 225 own rows, a cache of 30.
  EXPECT_EQ(table_bytes_per_rank(1000, 16, 4, 100, false, 30), (100 + 225 + 30) * 16 * 4);
  EXPECT_EQ(table_bytes_per_rank(1000, 16, 4, 100, true, 30), (2 * (100 + 225) + 30) * 16 * 4);
  EXPECT_EQ(table_bytes_per_rank(1001, 16, 4, 100, false, 0), (100 + 226) * 16 * 4);  // rank 0
  // The cache never holds more than the rows the rank does not store.
  EXPECT_EQ(table_bytes_per_rank(1000, 16, 2, 0, false, 5000), 1000 * 16 * 4);
  EXPECT_EQ(table_bytes_per_rank(1000, 16, 64, 4096, true), 2 * 1000 * 16 * 4);  // all hot
  Config c;
  c.softmax.samples = 100;
  c.train.batch_size = 10;
  EXPECT_EQ(plan_for(c, 5000, 4).rows_per_rank, 3);  // ranks 0 and 1 take the remainder
}

TEST(TrainingPlan, RefusalNamesTheNeedTheSourceAndTheLargestItems) {
  Config c;
  c.model.cell_size = 4096;
  c.model.projection_dim = 512;
  c.softmax.samples = 8192;
  const TrainingPlan plan = plan_for(c, 800000);
  HostMemoryAvailable small{int64_t{1} << 30, "MemAvailable of /proc/meminfo"};
  const std::string message = testing::error_of([&] { check_memory_fits(plan, 1, small, -1, ""); });
  EXPECT_THAT(message, HasSubstr("needs about"));
  EXPECT_THAT(message, HasSubstr("1.00 GiB are available (MemAvailable of /proc/meminfo)"));
  EXPECT_THAT(message, HasSubstr("optimizer: Adagrad accumulators of the embedding and softmax"));
  EXPECT_THAT(message, HasSubstr("data.max_vocab"));
  EXPECT_THAT(message, HasSubstr("--skip-memory-check"));
  HostMemoryAvailable plenty{int64_t{1} << 50, "test"};
  EXPECT_EQ(testing::error_of([&] { check_memory_fits(plan, 1, plenty, -1, ""); }), "");
  // Ranks sharing the machine each need their share.
  const int64_t one = plan.host_bytes(true);
  HostMemoryAvailable room{one + one / 2, "test"};
  EXPECT_EQ(testing::error_of([&] { check_memory_fits(plan, 1, room, -1, ""); }), "");
  EXPECT_THAT(testing::error_of([&] { check_memory_fits(plan, 2, room, -1, ""); }),
              HasSubstr("(2 processes on this machine)"));
  // Unknown host memory (-1) is not a refusal; a device is checked on its own.
  PlanInputs in;
  in.config = &c;
  in.vocab = 800000;
  in.on_gpu = true;
  const TrainingPlan gpu = plan_training(in);
  EXPECT_THAT(testing::error_of([&] {
                check_memory_fits(gpu, 1, HostMemoryAvailable{}, int64_t{1} << 30, "cuda:0");
              }),
              HasSubstr("on cuda:0 but 1.00 GiB are free (cudaMemGetInfo)"));
  EXPECT_GT(gpu.device_bytes(), int64_t{8} << 30);  // tables, accumulators on the device
  EXPECT_LT(gpu.host_bytes(), int64_t{4} << 30);    // not on the host
}

// ---- against measured peak memory ------------------------------------------------------------

struct Measured {
  double planned = 0, peak = 0;
};

// `elmo_fast plan --no-probe --json` and a real training run of the same config: the plan's host
// total against the run's VmHWM (summary.json peak_host_memory_bytes).
Measured plan_and_train(const std::string& dir, const std::string& config_text) {
  const std::string config = testing::write_text_file(dir, "run.toml", config_text);
  const auto plan =
      run_elmo("plan --config " + config + " --no-probe --json " + dir + "/plan.json");
  EXPECT_EQ(plan.status, 0) << plan.output;
  const auto train = run_elmo("train --config " + config);
  EXPECT_EQ(train.status, 0) << train.output;
  Measured m;
  m.planned = nlohmann::json::parse(read_file(dir + "/plan.json"))["host_bytes"].get<double>();
  m.peak = nlohmann::json::parse(read_file(dir + "/run/summary.json"))["peak_host_memory_bytes"]
               .get<double>();
  std::printf("planned %.0f bytes, measured peak %.0f bytes: planned / peak = %.4f\n", m.planned,
              m.peak, m.planned / m.peak);
  return m;
}

constexpr double kTolerance = 0.15;

TEST(TrainingPlan, HostBytesMatchPeakMemoryWhereTablesDominate) {
  ELMO_SKIP_UNDER_ASAN();
  // 200,000 words, 256-wide embedding and softmax: the two tables and their Adagrad accumulators
  // are 4 x 200,003 x 256 x 4 B = 819 MB.
  const std::string dir = testing::temp_dir("plan_tables");
  std::string vocab = "</S>\n<S>\n<UNK>\n", text;
  for (int i = 0; i < 200000; ++i) vocab += "w" + std::to_string(i) + "\n";
  Rng rng(3, kRngSynthetic);
  for (int s = 0; s < 2000; ++s) {
    for (int w = 0; w < 12; ++w)
      text +=
          (w ? " w" : "w") +
          std::to_string(static_cast<int>(std::exp(rng.uniform_double() * std::log(200001.0))) - 1);
    text += "\n";
  }
  testing::write_text_file(dir, "vocab.txt", vocab);
  testing::write_text_file(dir, "train.txt", text);
  const Measured m = plan_and_train(
      dir, "[run]\ndir = \"" + dir + "/run\"\n[data]\ncorpus = \"" + dir +
               "/train.txt\"\n"
               "vocab = \"" +
               dir +
               "/vocab.txt\"\n"
               "[model]\nembedding_dim = 256\ncell_size = 512\nprojection_dim = 256\n"
               "[softmax]\nsamples = 1024\n"
               "[train]\nbatch_size = 16\nunroll_steps = 10\nmax_steps = 2\nthreads = 2\n"
               "device = \"cpu\"\n[checkpoint]\nevery_steps = 0\n[metrics]\ntensorboard = false\n");
  // The tables dominate: they are most of the peak. (Not an absolute floor above them: a CUDA
  // build's binary maps the CUDA libraries too, a CPU-only build does not.)
  EXPECT_GT(8.19e8 / m.peak, 0.75) << m.peak;
  EXPECT_NEAR(m.planned / m.peak, 1.0, kTolerance) << m.planned << " planned, " << m.peak;
}

TEST(TrainingPlan, HostBytesMatchPeakMemoryWhereActivationsDominate) {
  ELMO_SKIP_UNDER_ASAN();
  const std::string dir = testing::temp_dir("plan_activations");
  const Measured m = plan_and_train(
      dir, "[run]\ndir = \"" + dir +
               "/run\"\n"
               "[synthetic]\ntrain_sentences = 20000\nvalid_sentences = 200\n"
               "[model]\ncell_size = 512\nprojection_dim = 128\n"
               "[softmax]\nsamples = 1000\n"
               "[train]\nbatch_size = 128\nunroll_steps = 64\nmax_steps = 2\nthreads = 2\n"
               "device = \"cpu\"\n[checkpoint]\nevery_steps = 0\n[eval]\nbatch_size = 64\n"
               "max_tokens = 2000\n[metrics]\ntensorboard = false\n");
  EXPECT_GT(m.peak, 6.0e8);
  EXPECT_NEAR(m.planned / m.peak, 1.0, kTolerance) << m.planned << " planned, " << m.peak;
}

TEST(TrainingPlan, HostBytesMatchPeakMemoryWithTheFullSoftmax) {
  ELMO_SKIP_UNDER_ASAN();
  // 60,000 words, full softmax of 256: the [V, 256] gradient and the [B x T, 4096] chunks.
  const std::string dir = testing::temp_dir("plan_full");
  const Measured m = plan_and_train(
      dir, "[run]\ndir = \"" + dir +
               "/run\"\n"
               "[synthetic]\nvocab_size = 60000\nclasses = 8\ntrain_sentences = 20000\n"
               "zipf_exponent = 0.6\nvalid_sentences = 0\n"
               "[model]\ncell_size = 256\nprojection_dim = 0\nlayers = 1\nbidirectional = false\n"
               "dropout = 0\n"
               "[softmax]\ntype = \"full\"\n"
               "[optimizer]\ntype = \"sgd\"\nlearning_rate = 1.0\n"
               "[train]\nbatch_size = 32\nunroll_steps = 20\nmax_steps = 2\nthreads = 2\n"
               "device = \"cpu\"\n[checkpoint]\nevery_steps = 0\n[metrics]\ntensorboard = false\n");
  EXPECT_NEAR(m.planned / m.peak, 1.0, kTolerance) << m.planned << " planned, " << m.peak;
}

// ---- the command and the trainer's refusal --------------------------------------------------

std::string tiny_config(const std::string& run_dir) {
  return "[run]\ndir = \"" + run_dir +
         "\"\n"
         "[synthetic]\nvocab_size = 150\nclasses = 4\ntrain_sentences = 500\n"
         "valid_sentences = 20\n"
         "[model]\nembedding_dim = 16\ncell_size = 32\nprojection_dim = 16\n"
         "[softmax]\nsamples = 40\n"
         "[train]\nbatch_size = 8\nunroll_steps = 10\nepochs = 2\nthreads = 2\n"
         "device = \"cpu\"\n";
}

TEST(PlanCommand, PrintsCountsMemoryFlopsAndAProbe) {
  const std::string dir = testing::temp_dir("plan_cmd");
  const std::string config = testing::write_text_file(dir, "run.toml", tiny_config(dir + "/run"));
  const auto r = run_elmo("plan --config " + config + " --json " + dir + "/plan.json");
  ASSERT_EQ(r.status, 0) << r.output;
  for (const char* part : {"parameters", "lstm.bwd.1", "host memory per process",
                           "activations: LSTM, kept for backward", "this machine:", "fits",
                           "MFLOP per token", "probe: 3 steps of 8 x 10 on cpu", "estimate:"})
    EXPECT_THAT(r.output, HasSubstr(part));
  const auto j = nlohmann::json::parse(read_file(dir + "/plan.json"));
  EXPECT_EQ(j["fits"], true);
  EXPECT_GT(j["probe"]["tokens_per_s"].get<double>(), 0.0);
  const auto stats = j["epoch_positions"].get<int64_t>();
  EXPECT_EQ(j["steps"].get<int64_t>(),
            static_cast<int64_t>(std::ceil(2.0 * static_cast<double>(stats) / 80.0)));
  EXPECT_NEAR(j["probe"]["estimated_train_seconds"].get<double>(),
              j["steps"].get<double>() * j["probe"]["seconds_per_step"].get<double>(), 1e-6);
  EXPECT_FALSE(fs::exists(dir + "/run/checkpoints"));  // nothing trained
  // The data it prepared is the training run's: the token cache is reused.
  const auto train = run_elmo("train --config " + config + " --set train.max_steps=1");
  ASSERT_EQ(train.status, 0) << train.output;
  EXPECT_THAT(train.output, HasSubstr("0 built"));

  const auto two = run_elmo("plan --config " + config + " --world-size 2 --probe-steps 1 --json " +
                            dir + "/two.json");
  ASSERT_EQ(two.status, 0) << two.output;
  EXPECT_THAT(two.output, HasSubstr("for the job if communication were free"));
  const auto t = nlohmann::json::parse(read_file(dir + "/two.json"));
  EXPECT_EQ(t["rows_per_rank"], 4);
  EXPECT_THAT(t["host_items"].dump(), HasSubstr("all-reduce bucket"));
  const auto none = run_elmo("plan --config " + config + " --no-probe");
  EXPECT_EQ(none.status, 0);
  EXPECT_THAT(none.output, HasSubstr("probe: skipped (--no-probe)"));
}

TEST(PlanCommand, BadFlagsAreUsageErrors) {
  const std::string dir = testing::temp_dir("plan_bad");
  const std::string config = testing::write_text_file(dir, "run.toml", tiny_config(dir + "/run"));
  for (const char* args :
       {"--world-size 0", "--world-size 9", "--probe-steps 0", "--set model.cell_sise=3"}) {
    const auto r = run_elmo("plan --config " + config + " " + args);
    EXPECT_EQ(r.status, 2) << args << "\n" << r.output;
  }
  EXPECT_THAT(run_elmo("plan --config " + config + " --world-size 9").output,
              HasSubstr("train.batch_size = 8 is smaller than --world-size 9"));
  EXPECT_EQ(run_elmo("plan --config " + dir + "/missing.toml").status, 2);
  // A plan that does not fit says so and skips the probe (exit 0: it is a report).
  const auto huge = run_elmo("plan --config " + config +
                             " --set model.cell_size=65536 --set model.projection_dim=0");
  EXPECT_EQ(huge.status, 0) << huge.output;
  EXPECT_THAT(huge.output, HasSubstr("does NOT fit"));
  EXPECT_THAT(huge.output, HasSubstr("probe: skipped (the configuration does not fit"));
}

TEST(TrainMemoryCheck, RefusesBeforeAllocatingWhatCannotFit) {
  const std::string dir = testing::temp_dir("train_refuses");
  const std::string config = testing::write_text_file(dir, "run.toml", tiny_config(dir + "/run"));
  const auto r = run_elmo("train --config " + config +
                          " --set model.cell_size=65536 --set model.projection_dim=0 --set "
                          "model.layers=16");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_THAT(r.output, HasSubstr("this configuration needs about"));
  EXPECT_THAT(r.output, HasSubstr("parameters: LSTM (2 x 16 layers)"));
  EXPECT_THAT(r.output, HasSubstr("model.cell_size"));
  EXPECT_THAT(r.output, HasSubstr("elmo_fast plan"));
  EXPECT_THAT(r.output, ::testing::Not(HasSubstr("out of host memory allocating")));
  EXPECT_FALSE(fs::exists(dir + "/run/checkpoints"));
  // Not absurd: about twice what this machine has available, in tensors each well below it (the
  // kind that allocates and then runs out mid-way). The address space is capped at 8 GiB, so a
  // missing check fails on the allocation (out of host memory) instead of taking the machine
  // (not under AddressSanitizer, which cannot start inside such a cap).
  // 2 directions x 2 layers of [4C, 2C] weights, each with an accumulator and a gradient:
  // 3 x 16 x 2 x C^2 x 4 bytes = 384 C^2.
  const HostMemoryAvailable available = host_memory_available();
  ASSERT_GT(available.bytes, 0) << "no MemAvailable here";
  const int64_t cell =
      static_cast<int64_t>(std::sqrt(2.0 * static_cast<double>(available.bytes) / 384.0));
#if defined(__SANITIZE_ADDRESS__)
  const std::string cap = "";  // ASan reserves terabytes of shadow address space: no ulimit -v
#else
  const std::string cap = "ulimit -v 8388608; ";
#endif
  const auto twice =
      testing::run_command(cap + testing::elmo_binary() + " train --config " +
                           config + " --set model.cell_size=" + std::to_string(cell) +
                           " --set model.embedding_dim=" + std::to_string(cell) +
                           " --set model.projection_dim=0 --set model.layers=2");
  EXPECT_EQ(twice.status, 2) << twice.output;
  EXPECT_THAT(twice.output, HasSubstr("this configuration needs about"));
  EXPECT_THAT(twice.output, HasSubstr("parameters: LSTM (2 x 2 layers)"));
  EXPECT_THAT(twice.output, HasSubstr("--skip-memory-check"));
  EXPECT_FALSE(fs::exists(dir + "/run/checkpoints"));
  // A configuration that fits trains as before; --skip-memory-check only skips the check.
  const auto ok =
      run_elmo("train --config " + config + " --set train.max_steps=2 --skip-memory-check");
  EXPECT_EQ(ok.status, 0) << ok.output;
  const auto summary = nlohmann::json::parse(read_file(dir + "/run/summary.json"));
  EXPECT_GT(summary["peak_host_memory_bytes"].get<int64_t>(), 0);
}

}  // namespace
}  // namespace elmo
