// Shared test helpers: tolerant comparison that reports the first wrong element, finite
// differences, data-folder lookup and GPU skips.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "runtime/cuda_memory.h"
#include "runtime/tensor.h"

namespace elmo::testing {

// Every element must satisfy |a - b| <= atol + rtol * |b|; the first failure is reported.
::testing::AssertionResult all_close(const float* actual, const float* expected, int64_t n,
                                     float atol, float rtol);
::testing::AssertionResult all_close(const std::vector<float>& actual,
                                     const std::vector<float>& expected, float atol, float rtol);

// Every element within tol * max|expected| + 1e-6 (errors that scale with the tensor, as bf16
// roundings do); the first failure is reported. max_diff, when given, receives the largest
// difference seen (so a test can check that the roundings really happened).
::testing::AssertionResult within_scale(const std::vector<float>& actual,
                                        const std::vector<float>& expected, float tol,
                                        const char* what, float* max_diff = nullptr);

// Central finite difference of a scalar function f w.r.t. x[i] (x is modified and restored).
double finite_difference(const std::function<double()>& f, float* x, int64_t i, double eps);

// Compares an analytic gradient with central differences at `samples` evenly spread indices.
// Uses relative error |a - n| / max(1e-2, |a| + |n|) <= tol.
::testing::AssertionResult gradient_matches(const std::function<double()>& loss, float* param,
                                            const float* analytic, int64_t n, double eps,
                                            double tol, int64_t samples = 64);

// Runs a shell command; returns its exit status (-1 if it died by a signal) and what it printed
// on stdout and stderr together.
struct CommandResult {
  int status = 0;
  std::string output;
};
CommandResult run_command(const std::string& command);
// `elmo_fast <args>` with the built binary.
CommandResult run_elmo(const std::string& args);

// Uniform(-1, 1) f32 CPU tensor from Rng(seed, 0).
Tensor random_tensor(const Shape& shape, uint64_t seed);
// n values scale * (2u - 1), u uniform from Rng(seed, kRngSynthetic).
std::vector<float> uniform_floats(uint64_t seed, int64_t n, float scale);

// Writes `text` to dir/name (replacing it) and returns the path.
std::string write_text_file(const std::string& dir, const std::string& name,
                            const std::string& text);
// The message of the elmo::Error that f throws, or "" when it throws none.
std::string error_of(const std::function<void()>& f);

// shared/data root (ELMO_DATA_DIR) or "" when absent.
std::string data_dir();
std::string source_dir();
std::string elmo_binary();
std::string build_dir();      // the CMake build folder (ELMO_BUILD_DIR)
std::string cmake_command();  // the cmake that configured it
// A fresh, empty temporary folder for this test (removed by the OS, not by the test).
std::string temp_dir(const std::string& tag);

// A TCP port on 127.0.0.1 that was free a moment ago (for servers a test starts).
int free_port();

// True when ELMO_REQUIRE_GPU is set in the environment to anything but "" or "0": a GPU test
// that finds no usable GPU then fails instead of skipping (ELMO_SKIP_WITHOUT_GPU).
bool gpu_required();
// "no GPU on this machine: <why>" (why: cuda_unavailable_reason(), the CUDA runtime's error).
std::string no_gpu_message();

}  // namespace elmo::testing

// First line of every GPU test. Without a usable GPU the test is skipped, printing why (the
// CUDA error text); with ELMO_REQUIRE_GPU=1 it fails instead, so a GPU machine whose driver or
// devices are broken cannot report green.
#define ELMO_SKIP_WITHOUT_GPU()                                                              \
  do {                                                                                       \
    if (::elmo::cuda_device_count() == 0) {                                                  \
      if (::elmo::testing::gpu_required())                                                   \
        GTEST_FAIL() << "ELMO_REQUIRE_GPU is set but " << ::elmo::testing::no_gpu_message(); \
      else                                                                                   \
        GTEST_SKIP() << ::elmo::testing::no_gpu_message();                                   \
    }                                                                                        \
  } while (0)

#define ELMO_SKIP_WITHOUT_DATA()                                                            \
  do {                                                                                      \
    if (::elmo::testing::data_dir().empty())                                                \
      GTEST_SKIP() << "shared data folder not found (configure with -DELMO_DATA_DIR=...)"; \
  } while (0)

// Tests that compare a measured resident memory (VmHWM) with the plan skip under
// AddressSanitizer: its shadow memory and freed-memory quarantine inflate the peak by a factor
// that is not the program's (.ci/sanitize.sh runs the rest of the suite there).
#if defined(__SANITIZE_ADDRESS__)
#define ELMO_SKIP_UNDER_ASAN()                                                                 \
  GTEST_SKIP() << "built with AddressSanitizer: its shadow memory and quarantine change the " \
                  "peak resident memory this test compares with the plan"
#else
#define ELMO_SKIP_UNDER_ASAN() \
  do {                         \
  } while (0)
#endif
