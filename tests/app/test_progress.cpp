// progress: format_duration cases, and Progress writing one plain log line (all fields) when
// stderr is not a terminal and a line is due, nothing when it is not due.
#include "app/progress.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "runtime/log.h"

namespace elmo {
namespace {

TEST(Progress, FormatDuration) {
  EXPECT_EQ(format_duration(0.0), "0s");
  EXPECT_EQ(format_duration(0.4), "0s");
  EXPECT_EQ(format_duration(0.6), "1s");  // rounded, not truncated
  EXPECT_EQ(format_duration(42.0), "42s");
  EXPECT_EQ(format_duration(59.4), "59s");
  EXPECT_EQ(format_duration(59.6), "1m00s");
  EXPECT_EQ(format_duration(60.0), "1m00s");
  EXPECT_EQ(format_duration(185.0), "3m05s");
  EXPECT_EQ(format_duration(3599.0), "59m59s");
  EXPECT_EQ(format_duration(3600.0), "1h00m");
  EXPECT_EQ(format_duration(3720.0), "1h02m");
  EXPECT_EQ(format_duration(3600.0 * 30 + 59 * 60), "30h59m");
  // Unknown or absurd: "?" rather than garbage.
  EXPECT_EQ(format_duration(-1.0), "?");
  EXPECT_EQ(format_duration(std::nan("")), "?");
  EXPECT_EQ(format_duration(std::numeric_limits<double>::infinity()), "?");
  EXPECT_EQ(format_duration(1e9), "?");
}

ProgressSnapshot snapshot() {
  ProgressSnapshot s;
  s.step = 25;
  s.total_steps = 100;
  s.tokens_per_s = 12345.4;
  s.loss = 4.56789;
  s.perplexity = 96.34;
  s.lr = 0.2;
  s.epoch = 1.5;
  s.eta_seconds = 185.0;
  return s;
}

TEST(Progress, PlainLogLineWhenNotATerminal) {
  const LogLevel saved = log_level();
  set_log_level(LogLevel::kInfo);
  // Captured stderr is a file, not a terminal: Progress must choose plain log lines.
  ::testing::internal::CaptureStderr();
  Progress progress;
  progress.update(snapshot(), /*log_line_due=*/true);
  progress.update(snapshot(), /*log_line_due=*/false);
  progress.finish();
  const std::string out = ::testing::internal::GetCapturedStderr();
  set_log_level(saved);
  // Exactly one line, with every field, and no terminal control sequences.
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
  EXPECT_EQ(out.find('\r'), std::string::npos) << out;
  EXPECT_EQ(out.find('\033'), std::string::npos) << out;
  EXPECT_NE(out.find("elmo_fast"), std::string::npos) << out;  // through the logger
  for (const char* part : {"step 25/100 (25%)", "epoch 1.50", "12345 tok/s", "loss 4.5679",
                           "ppl 96.34", "lr 0.2", "ETA 3m05s"})
    EXPECT_NE(out.find(part), std::string::npos) << part << " missing from: " << out;
}

TEST(Progress, NothingWhenNoLineIsDue) {
  ::testing::internal::CaptureStderr();
  Progress progress;
  for (int i = 0; i < 5; ++i) progress.update(snapshot(), false);
  progress.finish();
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
}

TEST(Progress, UnknownTotalDoesNotDivideByZero) {
  const LogLevel saved = log_level();
  set_log_level(LogLevel::kInfo);
  ::testing::internal::CaptureStderr();
  Progress progress;
  ProgressSnapshot s = snapshot();
  s.total_steps = 0;
  s.eta_seconds = -1.0;
  progress.update(s, true);
  const std::string out = ::testing::internal::GetCapturedStderr();
  set_log_level(saved);
  EXPECT_NE(out.find("step 25/0 (0%)"), std::string::npos) << out;
  EXPECT_NE(out.find("ETA ?"), std::string::npos) << out;
}

}  // namespace
}  // namespace elmo
