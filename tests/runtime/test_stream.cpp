#include "runtime/stream.h"

#include <gtest/gtest.h>

#include <thread>

namespace elmo {
namespace {

TEST(Stream, GuardRestoresAndStreamsArePerThread) {
  EXPECT_EQ(current_stream(), nullptr);
  auto fake = reinterpret_cast<cudaStream_t>(0x1234);
  {
    StreamGuard guard(fake);
    EXPECT_EQ(current_stream(), fake);
    cudaStream_t seen_by_other = fake;
    std::thread([&] { seen_by_other = current_stream(); }).join();
    EXPECT_EQ(seen_by_other, nullptr);
  }
  EXPECT_EQ(current_stream(), nullptr);
}

}  // namespace
}  // namespace elmo
