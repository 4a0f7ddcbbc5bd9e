#include "runtime/error.h"

#include <gtest/gtest.h>

namespace elmo {
namespace {

TEST(Error, CheckNamesExpressionFileAndContext) {
  const int rows = 3;
  try {
    ELMO_CHECK(rows == 4, "rows is ", rows, ", expected ", 4);
    FAIL() << "no throw";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("rows is 3, expected 4"), std::string::npos) << what;
    EXPECT_NE(what.find("rows == 4"), std::string::npos) << what;
    EXPECT_NE(what.find("test_error.cpp"), std::string::npos) << what;
  }
  set_error_context("rank 1/4 host-a");
  try {
    ELMO_CHECK(false);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("[rank 1/4 host-a]"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("internal check failed"), std::string::npos);
  }
  set_error_context("");
}

TEST(Error, RequireThrowsUsageErrorWithTheMessageOnly) {
  try {
    ELMO_REQUIRE(1 > 2, "train.batch_size = ", -4, " is out of range");
    FAIL();
  } catch (const UsageError& e) {
    EXPECT_EQ(std::string(e.what()), "train.batch_size = -4 is out of range");
  }
  EXPECT_EQ(str("a", 1, 'b', 2.5), "a1b2.5");
}

}  // namespace
}  // namespace elmo
