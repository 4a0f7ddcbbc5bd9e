// Shared parts of the GPU micro-benchmarks (bench_lstmp, bench_sampled_softmax, bench_adagrad):
// the no-GPU exit, CUDA-event timing (warm-ups, median of N), the output comparison against a
// reference, and the device/version block of the JSON.
//
// Exit codes of every GPU benchmark (documented in bench/README.md):
//   0  measured, every output within its tolerance
//   1  an output differs from the reference beyond its tolerance (numbers still printed/written)
//   2  error: bad flag value, CUDA/cuBLAS/cuDNN failure, cannot write the JSON
//   77 no CUDA device visible: nothing measured (CTest's SKIP_RETURN_CODE convention); with
//      ELMO_REQUIRE_GPU=1 in the environment this is exit code 2 instead (a GPU machine that
//      cannot use its GPU must not pass as skipped)
// What it is not: a benchmark framework; each program keeps its own cases and table.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace elmo::bench {

constexpr int kExitOk = 0;
constexpr int kExitMismatch = 1;
constexpr int kExitError = 2;
constexpr int kExitNoGpu = 77;

// 0 when a CUDA device is visible. Otherwise prints "<program>: no CUDA device visible ..."
// and the CUDA error text to stderr and returns the exit code: kExitNoGpu, or kExitError when
// ELMO_REQUIRE_GPU is set (to anything but "" or "0"). Callers: if (int rc = ...) return rc;
int no_gpu_exit_code(const char* program);

// Medians and spread of one timed operation, in milliseconds.
struct Timing {
  double median_ms = 0;
  double min_ms = 0;
  double max_ms = 0;
  int reps = 0;
};

// Runs `op` (which launches work on `stream`) `warmup` times, then `reps` times, each between
// two CUDA events recorded on `stream`; returns the median of the reps. `before`, when set, runs
// before each rep outside the timed interval (host preparation that must not be timed).
Timing time_on_stream(cudaStream_t stream, int warmup, int reps, const std::function<void()>& op,
                      const std::function<void()>& before = {});

// Element-wise comparison of one output with its reference.
//   max_abs      max |ours - ref|
//   ref_max_abs  max |ref|
//   normalized   max_abs / ref_max_abs (0 when both are all zero): the figure the tolerance is on
//   max_rel      max |ours - ref| / |ref| over elements with |ref| >= 1e-3 * ref_max_abs
//                (reported, not checked: near-zero elements make it meaningless on its own)
//   non_finite   elements where either side is NaN or Inf (always a failure)
struct Diff {
  std::string name;
  int64_t count = 0;
  double max_abs = 0;
  double ref_max_abs = 0;
  double normalized = 0;
  double max_rel = 0;
  int64_t non_finite = 0;
  int64_t worst_index = -1;
  double tolerance = 0;
  bool ok() const { return non_finite == 0 && normalized <= tolerance; }
};
Diff compare_outputs(const std::string& name, const std::vector<float>& ours,
                     const std::vector<float>& ref, double tolerance);
nlohmann::json diff_json(const Diff& d);
// "name 3.1e-06 (tol 1e-04)" or "... FAILED at [i]: ours x, ref y".
std::string diff_line(const Diff& d, const std::vector<float>& ours, const std::vector<float>& ref);

// Device name, compute capability, SM count, memory, CUDA runtime and driver versions, cuBLAS
// version, and NVIDIA_TF32_OVERRIDE when set.
nlohmann::json device_json(int device);

// Writes `out` to `path` (pretty-printed); returns false and says why on stderr when it cannot.
bool write_json(const std::string& path, const nlohmann::json& out);

// Copies n floats from the device to a host vector (synchronous).
std::vector<float> download_floats(const float* device_ptr, int64_t n);

}  // namespace elmo::bench
