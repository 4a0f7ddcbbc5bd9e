// `elmo_fast report` through the binary on run folders written here: the page of one run (every
// plot, the slice table, the summary), of a run still going (no summary.json), and the bad
// inputs: a folder with no metrics (alone: exit 1; beside another run: left out with a
// warning), a folder that does not exist (exit 2), a damaged metrics line (skipped with a
// warning naming file and line), an unwritable output. Pages are checked without a browser in
// tests/app/check_report.py.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "io/atomic_file.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;
using testing::run_elmo;

const char* const kMetrics =
    "{\"step\":10,\"time\":1.5,\"tokens\":1280,\"loss\":6.1,\"ppl\":445.9,\"tokens_per_s\":9000,"
    "\"lr\":0.6,\"grad_norm\":3.5,\"wall_time\":1700000001.5}\n"
    "{\"step\":20,\"time\":3.0,\"tokens\":2560,\"loss\":5.2,\"ppl\":181.3,\"tokens_per_s\":9100,"
    "\"lr\":0.6,\"grad_norm\":2.5,\"wall_time\":1700000003.0}\n"
    "{\"step\":20,\"time\":3.4,\"valid_ppl\":150.5,\"valid_ppl_head\":40.0,\"valid_ppl_torso\":"
    "160.0,\"valid_ppl_tail\":900.0,\"valid_ppl_unk\":null,\"valid_ppl_eos\":6.0,"
    "\"valid_share_head\":0.5,\"valid_share_torso\":0.3,\"valid_share_tail\":0.14,"
    "\"valid_share_unk\":0,\"valid_share_eos\":0.06,\"wall_time\":1700000003.4}\n";

const char* const kSummary = R"({"steps": 20, "tokens": 2560, "tokens_per_s": 9050.5,
  "valid": {"ppl": 150.5, "ppl_fwd": 149.0, "ppl_bwd": 152.0, "tokens": 1000,
    "slices": {"head": {"ids": "0 .. 20", "share": 0.5, "ppl": 40.0, "ppl_fwd": 39.0,
                        "ppl_bwd": 41.0, "tokens_fwd": 500, "tokens_bwd": 500},
               "unk": {"ids": "2", "share": 0.0, "ppl": null, "ppl_fwd": null,
                       "ppl_bwd": null, "tokens_fwd": 0, "tokens_bwd": 0}}}})";

std::string make_run(const std::string& dir, const std::string& metrics,
                     const std::string& summary = "") {
  fs::create_directories(dir);
  if (!metrics.empty()) write_file_atomic(dir + "/metrics.jsonl", metrics);
  if (!summary.empty()) write_file_atomic(dir + "/summary.json", summary);
  return dir;
}

size_t count_of(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

TEST(Report, OneRunPageHasEveryPlotTheSummaryAndTheSlices) {
  const std::string dir = testing::temp_dir("report_one");
  const std::string run = make_run(dir + "/run", kMetrics, kSummary);
  const auto r = run_elmo("report " + run + " --out " + dir + "/page.html");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("report: " + dir + "/page.html"));
  const std::string page = read_file(dir + "/page.html");
  EXPECT_EQ(page.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_THAT(page, Not(HasSubstr("<script")));
  EXPECT_EQ(count_of(page, "<svg "), 12u);  // 6 figures, against step and against time
  for (const char* title : {"Training loss vs step", "Throughput vs time", "Learning rate vs step",
                            "Gradient norm vs time", "Validation perplexity vs step",
                            "Validation perplexity by slice vs time"})
    EXPECT_THAT(page, HasSubstr(std::string(">") + title + "</text>")) << title;
  EXPECT_THAT(page, HasSubstr("data-series=\"head\" data-points=\"1\""));
  EXPECT_THAT(page, HasSubstr("data-series=\"&lt;UNK&gt;\" data-points=\"0\""));
  EXPECT_THAT(page, HasSubstr("finished: 20 steps"));
  EXPECT_THAT(page, HasSubstr("<td>valid.ppl_fwd</td><td>149</td>"));
  EXPECT_THAT(page, HasSubstr("final validation (summary.json)"));
  EXPECT_THAT(page, HasSubstr("<td>head</td><td>0 .. 20</td><td>50.0%</td><td>39.00</td>"));
  EXPECT_THAT(page, HasSubstr("no checkpoint with a saved configuration yet"));
  EXPECT_THAT(page, HasSubstr("1 null value(s) (an empty slice&#39;s perplexity, or a "
                              "non-finite value) left out of the plots"));
  EXPECT_THAT(page, HasSubstr("<title>loss at time 3s: 5.2</title>"));
}

TEST(Report, ARunStillGoingHasNoSummaryButItsCurvesAndLatestSlices) {
  const std::string dir = testing::temp_dir("report_going");
  const std::string run = make_run(dir + "/run", kMetrics);
  const auto r = run_elmo("report " + run + " --out " + dir + "/page.html");
  ASSERT_EQ(r.status, 0) << r.output;
  const std::string page = read_file(dir + "/page.html");
  EXPECT_THAT(page, HasSubstr("no summary.json: still running, stopped or failed; metrics up to "
                              "step 20"));
  EXPECT_THAT(page, HasSubstr("latest validation in metrics.jsonl (step 20)"));
  EXPECT_THAT(page, HasSubstr("<td>tail</td><td></td><td>14.0%</td>"));
  EXPECT_THAT(page, HasSubstr("data-series=\"loss\" data-points=\"2\""));
}

TEST(Report, ADamagedMetricsLineIsSkippedWithAWarningNamingIt) {
  const std::string dir = testing::temp_dir("report_damaged");
  const std::string metrics = std::string(kMetrics) + "{\"step\": 30, \"lo\n" +
                              "{\"step\":40,\"time\":6,\"loss\":4.5,\"wall_time\":1700000006}\n";
  const std::string run = make_run(dir + "/run", metrics);
  const auto r = run_elmo("report " + run + " --out " + dir + "/page.html");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr(run + "/metrics.jsonl:4: damaged line skipped"));
  const std::string page = read_file(dir + "/page.html");
  EXPECT_THAT(page, HasSubstr("metrics.jsonl:4: damaged line skipped"));
  EXPECT_THAT(page, HasSubstr("data-series=\"loss\" data-points=\"3\""));  // the lines around it
}

TEST(Report, AFolderWithoutMetricsIsAnErrorAloneAndLeftOutBesideOthers) {
  const std::string dir = testing::temp_dir("report_empty");
  const std::string empty = make_run(dir + "/empty", "");
  const std::string blank = make_run(dir + "/blank", "\n\n");
  const std::string good = make_run(dir + "/good", kMetrics, kSummary);
  const std::string out = dir + "/page.html";
  auto r = run_elmo("report " + empty + " --out " + out);
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_THAT(r.output, HasSubstr(empty + ": nothing to show: no metrics.jsonl and no "
                                          "summary.json"));
  r = run_elmo("report " + blank + " --out " + out);
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_THAT(r.output, HasSubstr("metrics.jsonl holds no readable line"));
  EXPECT_FALSE(fs::exists(out));
  r = run_elmo("report " + empty + " " + blank + " --out " + out);
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_THAT(r.output, HasSubstr("none of the run folders has anything to show"));
  EXPECT_FALSE(fs::exists(out));
  // Beside a run with metrics: left out, said on stderr and on the page.
  r = run_elmo("report " + good + " " + empty + " --out " + out);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr(empty + ": nothing to show"));
  EXPECT_THAT(read_file(out), HasSubstr("left out"));
  // A folder that is not there is a typo: a usage error, whatever else is given.
  r = run_elmo("report " + good + " " + dir + "/nope --out " + out);
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_THAT(r.output, HasSubstr("'" + dir + "/nope' is not a folder"));
  r = run_elmo("report " + good);
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_THAT(r.output, HasSubstr("--out"));
  r = run_elmo("report " + good + " --out /proc/no-such-folder/page.html");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_THAT(r.output, HasSubstr("/proc/no-such-folder/page.html"));
}

TEST(Report, SeveralRunsAreOverlaidAndNamedApart) {
  const std::string dir = testing::temp_dir("report_several");
  const std::string a = make_run(dir + "/a/run", kMetrics, kSummary);
  const std::string b = make_run(dir + "/b/run", kMetrics);
  const auto r = run_elmo("report " + a + " " + b + " " + a + "/ --out " + dir + "/page.html");
  ASSERT_EQ(r.status, 0) << r.output;
  const std::string page = read_file(dir + "/page.html");
  // Same folder name: the paths tell them apart, in the legends and the tables.
  EXPECT_THAT(page, HasSubstr("data-series=\"" + a + "\""));
  EXPECT_THAT(page, HasSubstr("data-series=\"" + b + " head\""));
  EXPECT_THAT(page, HasSubstr("class=\"legend\""));
  EXPECT_THAT(page, HasSubstr("<th>" + a + "</th><th>" + b + "</th>"));
  EXPECT_THAT(page, HasSubstr("class=\"diff\""));  // the summary exists for one of them only
  EXPECT_THAT(page, HasSubstr("given twice; shown once"));
}

}  // namespace
}  // namespace elmo
