// Shared parts of the GPU micro-benchmarks; see gpu_bench.h.
#include "bench/gpu_bench.h"

#include <cublas_v2.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>

#include "runtime/cuda_check.h"
#include "runtime/cuda_memory.h"
#include "runtime/error.h"

namespace elmo::bench {

int no_gpu_exit_code(const char* program) {
  if (cuda_device_count() > 0) return kExitOk;
  const char* require = std::getenv("ELMO_REQUIRE_GPU");
  const bool required = require != nullptr && *require != '\0' && std::string(require) != "0";
  const int code = required ? kExitError : kExitNoGpu;
  std::fprintf(stderr,
               "%s: no CUDA device visible (no GPU, no driver, or CUDA_VISIBLE_DEVICES hides "
               "it): %s; nothing measured, exit code %d%s\n",
               program, cuda_unavailable_reason().c_str(), code,
               required ? " (ELMO_REQUIRE_GPU is set)" : "");
  return code;
}

Timing time_on_stream(cudaStream_t stream, int warmup, int reps, const std::function<void()>& op,
                      const std::function<void()>& before) {
  ELMO_CHECK(reps > 0 && warmup >= 0, "time_on_stream: reps ", reps, " warmup ", warmup);
  for (int i = 0; i < warmup; ++i) {
    if (before) before();
    op();
  }
  ELMO_CUDA_CHECK(cudaStreamSynchronize(stream));
  cudaEvent_t start = nullptr, stop = nullptr;
  ELMO_CUDA_CHECK(cudaEventCreate(&start));
  ELMO_CUDA_CHECK(cudaEventCreate(&stop));
  std::vector<double> ms;
  ms.reserve(static_cast<size_t>(reps));
  for (int i = 0; i < reps; ++i) {
    if (before) before();
    ELMO_CUDA_CHECK(cudaEventRecord(start, stream));
    op();
    ELMO_CUDA_CHECK(cudaEventRecord(stop, stream));
    ELMO_CUDA_CHECK(cudaEventSynchronize(stop));
    float elapsed = 0;
    ELMO_CUDA_CHECK(cudaEventElapsedTime(&elapsed, start, stop));
    ms.push_back(elapsed);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(ms.begin(), ms.end());
  Timing t;
  t.reps = reps;
  t.min_ms = ms.front();
  t.max_ms = ms.back();
  t.median_ms = ms.size() % 2 ? ms[ms.size() / 2]
                              : 0.5 * (ms[ms.size() / 2 - 1] + ms[ms.size() / 2]);
  return t;
}

Diff compare_outputs(const std::string& name, const std::vector<float>& ours,
                     const std::vector<float>& ref, double tolerance) {
  ELMO_CHECK(ours.size() == ref.size(), "compare ", name, ": ", ours.size(), " values vs ",
             ref.size(), " reference values");
  Diff d;
  d.name = name;
  d.count = static_cast<int64_t>(ref.size());
  d.tolerance = tolerance;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(ours[i]) || !std::isfinite(ref[i])) {
      if (d.non_finite++ == 0) d.worst_index = static_cast<int64_t>(i);
      continue;
    }
    d.ref_max_abs = std::max(d.ref_max_abs, std::fabs(static_cast<double>(ref[i])));
    const double diff = std::fabs(static_cast<double>(ours[i]) - ref[i]);
    if (diff > d.max_abs) {
      d.max_abs = diff;
      if (d.non_finite == 0) d.worst_index = static_cast<int64_t>(i);
    }
  }
  const double floor = 1e-3 * d.ref_max_abs;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double r = std::fabs(static_cast<double>(ref[i]));
    if (!std::isfinite(ours[i]) || !std::isfinite(ref[i]) || r < floor || r == 0) continue;
    d.max_rel = std::max(d.max_rel, std::fabs(static_cast<double>(ours[i]) - ref[i]) / r);
  }
  d.normalized = d.ref_max_abs > 0 ? d.max_abs / d.ref_max_abs : (d.max_abs > 0 ? INFINITY : 0);
  return d;
}

nlohmann::json diff_json(const Diff& d) {
  return {{"output", d.name},          {"count", d.count},
          {"max_abs", d.max_abs},      {"ref_max_abs", d.ref_max_abs},
          {"normalized", d.normalized}, {"max_rel", d.max_rel},
          {"non_finite", d.non_finite}, {"tolerance", d.tolerance},
          {"ok", d.ok()}};
}

std::string diff_line(const Diff& d, const std::vector<float>& ours,
                      const std::vector<float>& ref) {
  char buffer[320];
  std::snprintf(buffer, sizeof buffer, "%-8s max|d| %.3g  max|ref| %.3g  normalized %.3g (tol %.1g)  max rel %.3g",
                d.name.c_str(), d.max_abs, d.ref_max_abs, d.normalized, d.tolerance, d.max_rel);
  std::string line = buffer;
  if (!d.ok() && d.worst_index >= 0) {
    const size_t i = static_cast<size_t>(d.worst_index);
    std::snprintf(buffer, sizeof buffer, "  FAILED: %lld non-finite; worst [%lld] ours %.8g ref %.8g",
                  static_cast<long long>(d.non_finite), static_cast<long long>(d.worst_index),
                  ours[i], ref[i]);
    line += buffer;
  }
  return line;
}

nlohmann::json device_json(int device) {
  cudaDeviceProp prop{};
  ELMO_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  int runtime = 0, driver = 0, cublas = 0;
  ELMO_CUDA_CHECK(cudaRuntimeGetVersion(&runtime));
  ELMO_CUDA_CHECK(cudaDriverGetVersion(&driver));
  cublasHandle_t handle = nullptr;
  ELMO_CUBLAS_CHECK(cublasCreate(&handle));
  ELMO_CUBLAS_CHECK(cublasGetVersion(handle, &cublas));
  cublasDestroy(handle);
  const char* tf32_override = std::getenv("NVIDIA_TF32_OVERRIDE");
  return {{"index", device},
          {"name", prop.name},
          {"compute_capability", std::to_string(prop.major) + "." + std::to_string(prop.minor)},
          {"sm_count", prop.multiProcessorCount},
          {"memory_bytes", static_cast<int64_t>(prop.totalGlobalMem)},
          {"l2_bytes", prop.l2CacheSize},
          {"cuda_runtime_version", runtime},
          {"cuda_driver_version", driver},
          {"cublas_version", cublas},
          {"NVIDIA_TF32_OVERRIDE", tf32_override ? tf32_override : ""}};
}

bool write_json(const std::string& path, const nlohmann::json& out) {
  if (path.empty()) return true;
  std::ofstream file(path);
  if (!(file << out.dump(2) << "\n")) {
    std::fprintf(stderr, "cannot write %s\n", path.c_str());
    return false;
  }
  std::printf("wrote %s\n", path.c_str());
  return true;
}

std::vector<float> download_floats(const float* device_ptr, int64_t n) {
  std::vector<float> out(static_cast<size_t>(n));
  if (n > 0)
    ELMO_CUDA_CHECK(cudaMemcpy(out.data(), device_ptr, sizeof(float) * static_cast<size_t>(n),
                               cudaMemcpyDeviceToHost));
  return out;
}

void add_common_flags(CLI::App& app, CommonOptions& common, const std::string& quick_help) {
  app.add_option("--reps", common.reps, "timed repetitions (median reported)")
      ->check(CLI::Range(1, 100000));
  app.add_option("--warmup", common.warmup, "untimed repetitions first")
      ->check(CLI::Range(0, 100000));
  app.add_flag("--quick", common.quick, quick_help);
  app.add_option("--json,--out", common.json, "where to write the JSON results ('' = nowhere)");
}

int bench_main(const char* program, CLI::App& app, CommonOptions& common, int argc, char** argv,
               const std::function<int()>& run) {
  CLI11_PARSE(app, argc, argv);
  if (common.quick) {
    common.reps = 3;
    common.warmup = 1;
  }
  try {
    return run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", program, e.what());
    return kExitError;
  }
}

int open_device(const char* program, nlohmann::json* device) {
  if (const int rc = no_gpu_exit_code(program)) return rc;
  cuda_set_device(0);
  *device = device_json(0);
  return kExitOk;
}

int finish(const char* program, const CommonOptions& common, nlohmann::json results, bool ok,
           const std::string& mismatch) {
  results["warmup"] = common.warmup;
  results["quick"] = common.quick;
  if (!write_json(common.json, results)) return kExitError;
  if (!ok) {
    std::fprintf(stderr, "%s: %s\n", program, mismatch.c_str());
    return kExitMismatch;
  }
  return kExitOk;
}

}  // namespace elmo::bench
