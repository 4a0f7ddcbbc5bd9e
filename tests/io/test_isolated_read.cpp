#include "io/isolated_read.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <functional>
#include <limits>
#include <cstring>
#include <new>

#include "runtime/error.h"

namespace elmo {
namespace {

using ::testing::HasSubstr;

// What the parent gets back is what the child returned, bit for bit: numbers, names, shapes
// (empty tensors included) and values, also when the answer is far larger than a pipe's buffer.
TEST(IsolatedRead, ReturnsTheChildsTensorsBitwise) {
  Tensor big = Tensor::empty({1024, 8192});  // 32 MiB
  float* p = big.data<float>();
  for (int64_t i = 0; i < big.numel(); ++i) p[i] = static_cast<float>(i) * 0.37f - 3.0f;
  p[5] = std::numeric_limits<float>::quiet_NaN();
  const Tensor small = Tensor::from_floats({1.5f, -2.0f, 1e-30f}, {3});
  const Tensor none = Tensor::empty({0, 4});
  const IsolatedResult r = run_isolated("origin.h5", 30, [&] {
    IsolatedResult out;
    out.numbers = {7, -1, int64_t{1} << 40};
    out.tensors = {{"big", big}, {"a/b", small}, {"empty", none}};
    return out;
  }, "hint");
  EXPECT_EQ(r.numbers, (std::vector<int64_t>{7, -1, int64_t{1} << 40}));
  ASSERT_EQ(r.tensors.size(), 3u);
  const Tensor* want[3] = {&big, &small, &none};
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(r.tensors[i].second.shape(), want[i]->shape()) << r.tensors[i].first;
    EXPECT_EQ(std::memcmp(r.tensors[i].second.raw(), want[i]->raw(), want[i]->nbytes()), 0);
  }
  EXPECT_EQ(r.tensors[1].first, "a/b");
}

TEST(IsolatedRead, TheChildsErrorIsRethrownWithItsMessage) {
  try {
    run_isolated("w.h5", 30, []() -> IsolatedResult {
      throw Error("w.h5: dataset 'B' is missing");
    }, "hint");
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "w.h5: dataset 'B' is missing");
  }
  try {
    run_isolated("w.h5", 30, []() -> IsolatedResult { throw std::bad_alloc(); }, "hint");
    FAIL();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("w.h5: cannot read this file: std::bad_alloc"));
  }
}

// A reader that crashes, exits or never answers takes down its child only: the caller gets an
// Error naming the file, what happened and the hint, and no child is left behind.
TEST(IsolatedRead, ACrashAnExitOrAHangBecomesAClearError) {
  auto message = [](int limit, const std::function<IsolatedResult()>& read) {
    try {
      run_isolated("damaged.hdf5", limit, read, "Export it again.");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  const std::string crash = message(30, []() -> IsolatedResult {
    ::signal(SIGSEGV, SIG_DFL);  // as a crash without a sanitizer's handler
    ::raise(SIGSEGV);
    return {};
  });
  EXPECT_THAT(crash, HasSubstr("damaged.hdf5: the reader process crashed (signal 11"));
  EXPECT_THAT(crash, HasSubstr("Export it again."));
  EXPECT_THAT(message(30, []() -> IsolatedResult { ::_exit(1); }),
              HasSubstr("the reader process failed (exit status 1)"));
  EXPECT_THAT(message(30, []() -> IsolatedResult { std::abort(); }),
              HasSubstr("crashed (signal 6"));
  EXPECT_THAT(message(30, []() -> IsolatedResult {
                ::raise(SIGTERM);  // as Ctrl-C or a kill: not the file's fault
                return {};
              }),
              HasSubstr("the reader process was stopped from outside (signal 15"));

  const auto start = std::chrono::steady_clock::now();
  EXPECT_THAT(message(1, []() -> IsolatedResult {
                for (;;) ::pause();
              }),
              HasSubstr("the reader process ran past its limit of 1 s and was stopped"));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(20));

  int status = 0;
  EXPECT_EQ(::waitpid(-1, &status, WNOHANG), -1);  // no child left, finished or not
  EXPECT_EQ(errno, ECHILD);
}

}  // namespace
}  // namespace elmo
