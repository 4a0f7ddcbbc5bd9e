#include "io/atomic_file.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "runtime/error.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

TEST(AtomicFile, WritesReplacesAndLeavesNoTemporary) {
  const std::string dir = testing::temp_dir("atomic");
  const std::string path = dir + "/f.bin";
  write_file_atomic(path, "first");
  write_file_atomic(path, std::string("sec\0nd", 6));
  EXPECT_EQ(read_file(path), std::string("sec\0nd", 6));
  int entries = 0;
  for (auto& e : std::filesystem::directory_iterator(dir)) (void)e, ++entries;
  EXPECT_EQ(entries, 1);
}

TEST(AtomicFile, ErrorsNameThePath) {
  try {
    read_file("/nonexistent/elmo/file");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/elmo/file"), std::string::npos);
  }
  EXPECT_THROW(write_file_atomic("/nonexistent/elmo/file", "x"), Error);
}

}  // namespace
}  // namespace elmo
