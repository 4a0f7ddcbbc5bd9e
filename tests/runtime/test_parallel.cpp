#include "runtime/parallel.h"

#include <gtest/gtest.h>

#include <atomic>
#include <vector>

#include "runtime/error.h"

namespace elmo {
namespace {

TEST(Parallel, CoversEveryIndexOnce) {
  std::vector<int> hits(1003, 0);
  parallel_for(1003, 10, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) hits[i]++;
  });
  for (int h : hits) EXPECT_EQ(h, 1);
}

TEST(Parallel, RunConcurrentlyRunsEveryTaskAndPropagatesErrors) {
  std::vector<int> hits(2, 0);
  run_concurrently(2, [&](int i) { hits[i] += 1; });
  EXPECT_EQ(hits, (std::vector<int>{1, 1}));
  EXPECT_THROW(run_concurrently(2,
                                [](int i) {
                                  if (i == 1) throw Error("task 1 failed");
                                }),
               Error);
  // Inside a concurrent task, parallel_for runs inline and still covers every index.
  std::vector<int> inner(2, 0);
  run_concurrently(2, [&](int i) {
    parallel_for(100, 1, [&](int64_t b, int64_t e) { inner[i] += static_cast<int>(e - b); });
  });
  EXPECT_EQ(inner, (std::vector<int>{100, 100}));
}

}  // namespace
}  // namespace elmo
