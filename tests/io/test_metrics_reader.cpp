// read_metrics_history: what MetricsLogger writes reads back as series; damaged lines are skipped
// with a warning naming file and line; a resumed run (steps or time going back, or another
// process start) is stitched: replaced points dropped, time continuing; nulls left out; files
// of the older format (validation lines without time or wall_time) still read.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <limits>

#include "io/metrics.h"
#include "io/metrics_reader.h"
#include "runtime/error.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

using ::testing::HasSubstr;

std::string write_metrics(const std::string& text) {
  return testing::write_text_file(testing::temp_dir("metrics_reader"), "metrics.jsonl", text);
}

std::vector<int64_t> steps_of(const MetricsHistory& h, const std::string& key) {
  std::vector<int64_t> out;
  if (const auto* points = h.find(key))
    for (const MetricPoint& p : *points) out.push_back(p.step);
  return out;
}

TEST(MetricsReader, ReadsWhatTheLoggerWrites) {
  const std::string run = testing::temp_dir("metrics_reader_logger");
  {
    MetricsLogger logger(run, true, false);
    logger.log(10, {{"time", 1.5}, {"loss", 4.25}, {"lr", 0.2}});
    logger.log(20, {{"time", 3.0}, {"loss", 4.0}, {"lr", 0.2}});
    logger.log(20, {{"time", 3.5},
                    {"valid_ppl", 80.5},
                    {"valid_ppl_unk", std::numeric_limits<double>::quiet_NaN()}});
  }
  const MetricsHistory h = read_metrics_history(run + "/metrics.jsonl");
  EXPECT_EQ(h.records, 3);
  EXPECT_EQ(h.segments, 1);
  EXPECT_EQ(h.damaged, 0);
  EXPECT_TRUE(h.warnings.empty());
  ASSERT_NE(h.find("loss"), nullptr);
  ASSERT_EQ(h.find("loss")->size(), 2u);
  EXPECT_EQ(h.find("loss")->at(1).step, 20);
  EXPECT_DOUBLE_EQ(h.find("loss")->at(1).time, 3.0);
  EXPECT_DOUBLE_EQ(h.find("loss")->at(1).value, 4.0);
  EXPECT_DOUBLE_EQ(h.find("valid_ppl")->at(0).time, 3.5);
  // null (NaN) is counted and left out; time and wall_time are axes, not series.
  EXPECT_EQ(h.find("valid_ppl_unk"), nullptr);
  EXPECT_EQ(h.non_finite, 1);
  EXPECT_EQ(h.find("time"), nullptr);
  EXPECT_EQ(h.find("wall_time"), nullptr);
}

TEST(MetricsReader, DamagedLinesAreSkippedWithTheirFileAndLine) {
  const std::string path = write_metrics(
      "{\"step\":1,\"time\":1,\"loss\":5}\n"
      "{\"step\": 2, \"lo\n"              // torn by a crash
      "\n"                                // blank: ignored
      "[1, 2, 3]\n"                       // JSON, but not an object
      "{\"loss\": 4}\n"                   // no step
      "{\"step\": \"3\", \"loss\": 4}\n"  // step of the wrong type
      "{\"step\":4,\"time\":4,\"loss\":3,\"note\":\"x\",\"flag\":true}\n");  // odd keys ignored
  const MetricsHistory h = read_metrics_history(path);
  EXPECT_EQ(h.records, 2);
  EXPECT_EQ(h.damaged, 4);
  ASSERT_EQ(h.warnings.size(), 4u);
  EXPECT_THAT(h.warnings[0], HasSubstr(path + ":2: damaged line skipped"));
  EXPECT_THAT(h.warnings[1], HasSubstr(path + ":4:"));
  EXPECT_THAT(h.warnings[2], HasSubstr(path + ":5:"));
  EXPECT_THAT(h.warnings[3], HasSubstr(path + ":6:"));
  EXPECT_EQ(steps_of(h, "loss"), (std::vector<int64_t>{1, 4}));
  EXPECT_EQ(h.find("note"), nullptr);
}

TEST(MetricsReader, ManyDamagedLinesAreCountedNotAllListed) {
  std::string text;
  for (int i = 0; i < 25; ++i) text += "garbage\n";
  text += "{\"step\":1,\"loss\":2}\n";
  const MetricsHistory h = read_metrics_history(write_metrics(text));
  EXPECT_EQ(h.damaged, 25);
  ASSERT_EQ(h.warnings.size(), 11u);
  EXPECT_THAT(h.warnings.back(), HasSubstr("15 more damaged line(s) skipped"));
  EXPECT_EQ(h.records, 1);
}

TEST(MetricsReader, AResumeDropsReplacedPointsAndKeepsTimeRunning) {
  // Process 1 logged steps 10..40 over 40 s and evaluated at 20; it crashed after its checkpoint
  // at step 20. Process 2 resumed from step 20 and logged 30..50 again from time 0.
  const std::string path = write_metrics(
      "{\"step\":10,\"time\":10,\"loss\":5,\"wall_time\":1000010}\n"
      "{\"step\":20,\"time\":20,\"loss\":4,\"wall_time\":1000020}\n"
      "{\"step\":20,\"time\":22,\"valid_ppl\":60,\"wall_time\":1000022}\n"
      "{\"step\":30,\"time\":30,\"loss\":3.5,\"wall_time\":1000030}\n"
      "{\"step\":40,\"time\":40,\"loss\":3.2,\"wall_time\":1000040}\n"
      "{\"step\":30,\"time\":12,\"loss\":3.4,\"wall_time\":1000512}\n"
      "{\"step\":40,\"time\":20,\"loss\":3.1,\"wall_time\":1000520}\n"
      "{\"step\":50,\"time\":28,\"loss\":3.0,\"wall_time\":1000528}\n"
      "{\"step\":50,\"time\":30,\"valid_ppl\":40,\"wall_time\":1000530}\n");
  const MetricsHistory h = read_metrics_history(path);
  EXPECT_EQ(h.segments, 2);
  EXPECT_EQ(h.superseded, 2);  // the first process's steps 30 and 40
  EXPECT_EQ(steps_of(h, "loss"), (std::vector<int64_t>{10, 20, 30, 40, 50}));
  const auto& loss = *h.find("loss");
  EXPECT_DOUBLE_EQ(loss[2].value, 3.4);  // the resumed process's
  // Time of running: process 2's times follow all 40 s of process 1.
  EXPECT_DOUBLE_EQ(loss[1].time, 20.0);
  EXPECT_DOUBLE_EQ(loss[2].time, 52.0);
  EXPECT_DOUBLE_EQ(loss[4].time, 68.0);
  EXPECT_EQ(steps_of(h, "valid_ppl"), (std::vector<int64_t>{20, 50}));
  EXPECT_DOUBLE_EQ(h.find("valid_ppl")->at(1).time, 70.0);
}

TEST(MetricsReader, AResumeAtTheLastLoggedStepIsFoundByTheProcessStart) {
  // Stopped cleanly at step 20 (its last line), resumed: the steps and even the time go on
  // increasing, but wall_time - time shows another process.
  const std::string path = write_metrics(
      "{\"step\":10,\"time\":2,\"loss\":5,\"wall_time\":5002}\n"
      "{\"step\":20,\"time\":4,\"loss\":4,\"wall_time\":5004}\n"
      "{\"step\":30,\"time\":6,\"loss\":3,\"wall_time\":9006}\n");
  const MetricsHistory h = read_metrics_history(path);
  EXPECT_EQ(h.segments, 2);
  EXPECT_EQ(h.superseded, 0);
  EXPECT_DOUBLE_EQ(h.find("loss")->at(2).time, 10.0);  // 4 s of process 1, then 6 s
  // Without wall_time (files written before it existed) time going back still tells.
  const MetricsHistory old = read_metrics_history(
      write_metrics("{\"step\":10,\"time\":8,\"loss\":5}\n{\"step\":20,\"time\":16,\"loss\":4}\n"
                    "{\"step\":30,\"time\":6,\"loss\":3}\n"));
  EXPECT_EQ(old.segments, 2);
  EXPECT_DOUBLE_EQ(old.find("loss")->at(2).time, 22.0);
}

TEST(MetricsReader, OldValidationLinesWithoutTimeTakeThePreviousLinesTime) {
  const MetricsHistory h = read_metrics_history(
      write_metrics("{\"step\":50,\"time\":7.5,\"loss\":5}\n{\"step\":50,\"valid_ppl\":90}\n"
                    "{\"step\":100,\"time\":15,\"loss\":4}\n{\"step\":100,\"valid_ppl\":80}\n"));
  EXPECT_EQ(h.segments, 1);
  EXPECT_DOUBLE_EQ(h.find("valid_ppl")->at(0).time, 7.5);
  EXPECT_DOUBLE_EQ(h.find("valid_ppl")->at(1).time, 15.0);
}

TEST(MetricsReader, EmptyAndMissingFiles) {
  const MetricsHistory h = read_metrics_history(write_metrics(""));
  EXPECT_EQ(h.records, 0);
  EXPECT_EQ(h.segments, 0);
  EXPECT_TRUE(h.series.empty());
  EXPECT_THAT(testing::error_of([] { read_metrics_history("/nonexistent/metrics.jsonl"); }),
              HasSubstr("cannot open metrics file '/nonexistent/metrics.jsonl'"));
}

}  // namespace
}  // namespace elmo
