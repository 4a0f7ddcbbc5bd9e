#include "io/metrics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include "io/atomic_file.h"
#include "runtime/error.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

std::vector<std::string> lines_of(const std::string& path) {
  std::istringstream in(read_file(path));
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

TEST(Metrics, LoggerWritesJsonLinesAndTensorBoard) {
  const std::string run = testing::temp_dir("metrics_logger");
  {
    MetricsLogger logger(run, true, true);
    logger.log(100, {{"tokens", 256000}, {"loss", 4.5}, {"ppl", 90.0171}, {"tokens_per_s", 12345.5},
                     {"lr", 0.2}, {"grad_norm", 3.25}, {"time", 12.5}});
    logger.log(200, {{"tokens", 512000}, {"loss", 4.0}, {"epoch", 1},
                     {"eval_ppl_fwd", std::numeric_limits<double>::quiet_NaN()}});
    ASSERT_NE(logger.tensorboard(), nullptr);
    EXPECT_EQ(std::filesystem::path(logger.tensorboard()->path()).parent_path(),
              std::filesystem::path(run + "/tb"));
  }
  const auto lines = lines_of(run + "/metrics.jsonl");
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0].rfind("{\"step\":100,\"tokens\":256000,\"loss\":4.5,", 0), 0u) << lines[0];
  const auto first = nlohmann::json::parse(lines[0]);
  EXPECT_EQ(first["step"], 100);
  EXPECT_TRUE(first["tokens"].is_number_integer());
  EXPECT_DOUBLE_EQ(first["ppl"].get<double>(), 90.0171);
  EXPECT_DOUBLE_EQ(first["lr"].get<double>(), 0.2);
  const auto second = nlohmann::json::parse(lines[1]);
  EXPECT_EQ(second["epoch"], 1);
  EXPECT_TRUE(second["eval_ppl_fwd"].is_null());
  int tb_files = 0;
  for (auto& e : std::filesystem::directory_iterator(run + "/tb")) (void)e, ++tb_files;
  EXPECT_EQ(tb_files, 1);
}

TEST(Metrics, AppendsOnResumeAndIsolatesATornLine) {
  const std::string run = testing::temp_dir("metrics_resume");
  { MetricsLogger(run, true, false).log(1, {{"loss", 1.5}}); }
  // A crash in the middle of a line.
  { std::ofstream(run + "/metrics.jsonl", std::ios::app) << "{\"step\": 2, \"lo"; }
  { MetricsLogger(run, true, false).log(3, {{"loss", 0.5}}); }
  const auto lines = lines_of(run + "/metrics.jsonl");
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(nlohmann::json::parse(lines[0])["step"], 1);
  EXPECT_FALSE(nlohmann::json::accept(lines[1]));
  EXPECT_EQ(nlohmann::json::parse(lines[2])["step"], 3);
  EXPECT_FALSE(std::filesystem::exists(run + "/tb"));
}

TEST(Metrics, LinesAreFlushedImmediately) {
  const std::string run = testing::temp_dir("metrics_flush");
  MetricsSink sink(run + "/sub/m.jsonl");
  sink.write(metrics_object(7, {{"x", 2.0}}));
  EXPECT_EQ(read_file(run + "/sub/m.jsonl"), "{\"step\":7,\"x\":2}\n");
}

TEST(Metrics, DisabledSinksCreateNothing) {
  const std::string run = testing::temp_dir("metrics_off");
  MetricsLogger logger(run, false, false);
  logger.log(1, {{"loss", 1.0}});
  EXPECT_TRUE(std::filesystem::is_empty(run));
  EXPECT_THROW(MetricsSink("/proc/elmo_no_such_dir/m.jsonl"), Error);
}

}  // namespace
}  // namespace elmo
