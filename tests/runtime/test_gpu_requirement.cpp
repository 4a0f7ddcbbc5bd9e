// On a machine without a usable GPU: a GPU test and a GPU benchmark's smoke test skip, printing
// the CUDA error that made them skip, and fail (printing it too) when ELMO_REQUIRE_GPU=1 is in
// the environment. Runs the real binaries: test_runtime_gpu, bench_adagrad and the smoke script
// (built by CTest's build_test_binaries fixture, as every test binary).
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "runtime/cuda_memory.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

namespace fs = std::filesystem;

// Skips unless this is a CUDA build on a machine whose GPU cannot be used.
#define SKIP_UNLESS_CUDA_BUILD_WITHOUT_GPU()                                                  \
  do {                                                                                        \
    if (!cuda_compiled_in()) GTEST_SKIP() << "CPU-only build: there are no GPU tests to run"; \
    if (cuda_device_count() > 0) GTEST_SKIP() << "a GPU is usable: this checks its absence";  \
  } while (0)

// A binary of this build; the test stops if it is missing.
#define ASSERT_BUILT(path) \
  ASSERT_TRUE(fs::exists(path)) << path << " is not built (cmake --build build --target elmo_tests)"

const char* kWithout = "env -u ELMO_REQUIRE_GPU ";
const char* kWith = "env ELMO_REQUIRE_GPU=1 ";

TEST(RequireGpu, GpuTestSkipsSayingWhyOrFailsWhenAGpuIsRequired) {
  SKIP_UNLESS_CUDA_BUILD_WITHOUT_GPU();
  const std::string why = cuda_unavailable_reason();
  ASSERT_FALSE(why.empty());
  const std::string gpu_tests = testing::build_dir() + "/tests/test_runtime_gpu";
  ASSERT_BUILT(gpu_tests);
  const std::string test = gpu_tests + " --gtest_filter=CudaMemoryGpu.AllocateCopyZeroAndPeak";
  testing::CommandResult r = testing::run_command(kWithout + test);
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("[  SKIPPED ]"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("no GPU on this machine: " + why), std::string::npos) << r.output;

  r = testing::run_command(kWith + test);
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("[  FAILED  ]"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("[  SKIPPED ]"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("ELMO_REQUIRE_GPU is set but no GPU on this machine: " + why),
            std::string::npos)
      << r.output;

  r = testing::run_command("env ELMO_REQUIRE_GPU=0 " + test);  // "0" does not require one
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("[  SKIPPED ]"), std::string::npos) << r.output;
}

TEST(RequireGpu, GpuBenchmarkExitsSkippedOrFailedSayingWhy) {
  SKIP_UNLESS_CUDA_BUILD_WITHOUT_GPU();
  const std::string why = cuda_unavailable_reason();
  const std::string bench = testing::build_dir() + "/bench/bench_adagrad";
  ASSERT_BUILT(bench);
  const std::string json = testing::temp_dir("require_gpu") + "/out.json";
  testing::CommandResult r = testing::run_command(kWithout + bench + " --quick --json " + json);
  EXPECT_EQ(r.status, 77) << r.output;
  EXPECT_NE(r.output.find(why), std::string::npos) << r.output;
  r = testing::run_command(kWith + bench + " --quick --json " + json);
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find(why), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("ELMO_REQUIRE_GPU is set"), std::string::npos) << r.output;

  // The CTest smoke test's script: skip (its skip pattern, the reason) or fail.
  const std::string smoke = testing::cmake_command() + " -DBENCH=" + bench + " -DJSON=" + json +
                            " -P " + testing::source_dir() +
                            "/tests/bench/run_gpu_bench_smoke.cmake";
  r = testing::run_command(kWithout + smoke);
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("SKIPPED: no CUDA device"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(why), std::string::npos) << r.output;
  r = testing::run_command(kWith + smoke);
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_EQ(r.output.find("SKIPPED: no CUDA device"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("ELMO_REQUIRE_GPU is set but"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(why), std::string::npos) << r.output;
}

}  // namespace
}  // namespace elmo
