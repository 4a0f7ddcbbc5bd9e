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

namespace CLI {
class App;
}  // namespace CLI

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

// ---- The common main (nccl-tests' common.cu is the model) -----------------------------------
// Every GPU benchmark's main() is: its own flags + add_common_flags, then bench_main with its
// run function; run opens the device with open_device and ends with finish. The benchmark keeps
// its cases, its table and its JSON fields; this part owns the flags they share, the JSON file
// and the exit codes above.

// The flags every GPU benchmark takes (a benchmark's Options derive from this and set `json` to
// its default path):
//   --reps N          timed repetitions (median reported)
//   --warmup N        untimed repetitions first
//   --quick           small shapes, 3 reps, 1 warm-up (the CTest smoke test); the benchmark
//                     picks its shapes after bench_main has set reps and warmup
//   --json,--out PATH where to write the JSON results ('' = nowhere)
struct CommonOptions {
  int reps = 20;
  int warmup = 3;
  bool quick = false;
  std::string json;
};
void add_common_flags(CLI::App& app, CommonOptions& common, const std::string& quick_help);

// Parses argv (a bad flag exits as CLI11_PARSE does: CLI11's message and exit code; --help 0),
// applies --quick's reps and warmup, then returns run(); an exception from run is printed as
// "<program>: <what>" on stderr and exits kExitError.
int bench_main(const char* program, CLI::App& app, CommonOptions& common, int argc, char** argv,
               const std::function<int()>& run);

// Makes device 0 current and fills *device with device_json(0); when no device is visible,
// returns no_gpu_exit_code's code (having said why) and touches nothing. Callers:
//   nlohmann::json device;
//   if (const int rc = open_device("bench_x", &device)) return rc;
int open_device(const char* program, nlohmann::json* device);

// The end of every run: adds "warmup" and "quick" to `results` (next to the benchmark's own
// "benchmark", "device", "cases", ...), writes them to common.json (kExitError when it cannot),
// then kExitMismatch with "<program>: <mismatch>" on stderr when !ok, else kExitOk.
int finish(const char* program, const CommonOptions& common, nlohmann::json results, bool ok,
           const std::string& mismatch);

}  // namespace elmo::bench
