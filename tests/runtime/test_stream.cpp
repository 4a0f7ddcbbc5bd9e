#include "runtime/stream.h"

#include <gtest/gtest.h>

#include <thread>

namespace elmo {
namespace {

TEST(Stream, GuardRestoresAndStreamsArePerThread) {
  EXPECT_EQ(current_stream(), nullptr);
  auto fake = reinterpret_cast<CudaStreamHandle>(0x1234);
  {
    StreamGuard guard(fake);
    EXPECT_EQ(current_stream(), fake);
    CudaStreamHandle seen_by_other = fake;
    std::thread([&] { seen_by_other = current_stream(); }).join();
    EXPECT_EQ(seen_by_other, nullptr);
  }
  EXPECT_EQ(current_stream(), nullptr);
}

// Streams forked from the legacy default stream must not serialise with it: a blocking
// stream makes every event recorded on stream 0 wait for its queued work, so BiLM's second
// direction would wait for the whole first one (forward and backward).
TEST(Stream, CudaStreamsAreNonBlocking) {
  EXPECT_EQ(kCudaStreamFlags & kCudaStreamNonBlocking, kCudaStreamNonBlocking);
}

}  // namespace
}  // namespace elmo
