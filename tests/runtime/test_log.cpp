#include "runtime/log.h"

#include <gtest/gtest.h>

namespace elmo {
namespace {

TEST(Log, LevelsFilterAndLinesCarryTheContext) {
  ::testing::internal::CaptureStderr();
  log_info("visible ", 1);
  set_log_level(LogLevel::kWarn);
  log_info("hidden");
  log_warn("careful");
  set_error_context("rank 2/3");
  log_error("broken");
  set_error_context("");
  set_log_level(LogLevel::kInfo);
  const std::string out = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(out.find("] visible 1\n"), std::string::npos) << out;
  EXPECT_EQ(out.find("hidden"), std::string::npos) << out;
  EXPECT_NE(out.find("warning: careful"), std::string::npos) << out;
  EXPECT_NE(out.find("rank 2/3] error: broken"), std::string::npos) << out;
  EXPECT_EQ(out.rfind("[elmo_fast ", 0), 0u) << out;
}

}  // namespace
}  // namespace elmo
