// bench_checkpoint: what the per-tensor CRC32C of checkpoint files (io/safetensors.h) costs.
//
// 1. CRC32C throughput of each implementation (io/crc32c.h) over one in-memory buffer.
// 2. Loading a large safetensors file (--mb MB of f32 in --tensors tensors, written once with
//    save_safetensors, so it carries checksums) with verification and without, alternating, each
//    --rounds times; the reference is the load without verification, measured in the same
//    invocation. The file is read from the page cache after the first round (the case where
//    the check costs the most relative to reading; from a disk, reading is slower and the
//    check's share smaller). The median of each is reported, with the check's share of the
//    unverified load.
// Prints one row per case and writes JSON (--json).
//
//   ./build/bench/bench_checkpoint [--mb 400] [--rounds 5] [--dir FOLDER] [--json PATH]
//
// What it is not: a disk benchmark (no cache dropping).
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/crc32c.h"
#include "io/safetensors.h"
#include "runtime/rng.h"

namespace elmo {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int run(int argc, char** argv) {
  int64_t mb = 400;
  int rounds = 5;
  int tensors = 8;
  std::string dir = std::filesystem::temp_directory_path().string();
  std::string json_path = "bench/results/checkpoint_load.json";
  CLI::App app("bench_checkpoint: the cost of verifying checkpoint checksums on load");
  app.add_option("--mb", mb, "file size in MB")->check(CLI::Range(1, 16384));
  app.add_option("--rounds", rounds, "timed loads of each kind")->check(CLI::Range(1, 100));
  app.add_option("--tensors", tensors, "tensors in the file")->check(CLI::Range(1, 1000));
  app.add_option("--dir", dir, "folder for the temporary file");
  app.add_option("--json", json_path, "where to write the results");
  CLI11_PARSE(app, argc, argv);

  nlohmann::json out;
  out["crc32c_implementation"] = crc32c_implementation();

  // 1. Throughput of each implementation over 256 MB (or the file size if smaller).
  const size_t buffer_bytes = static_cast<size_t>(std::min<int64_t>(mb, 256)) << 20;
  std::vector<unsigned char> buffer(buffer_bytes);
  Rng rng(1, 0);
  for (size_t i = 0; i < buffer.size(); i += 4) {
    const uint32_t v = rng.next_u32();
    std::copy_n(reinterpret_cast<const unsigned char*>(&v), std::min<size_t>(4, buffer.size() - i),
                buffer.data() + i);
  }
  std::printf("%-34s %10s %10s\n", "case", "seconds", "GB/s");
  struct Impl {
    const char* name;
    uint32_t (*fn)(uint32_t, const void*, size_t);
  };
  std::vector<Impl> impls = {{"crc32c software (slicing-by-8)", crc32c_software}};
  if (crc32c_hardware_available()) impls.push_back({"crc32c sse4.2 (3 streams)", crc32c_hardware});
  uint32_t check = 0;
  for (const Impl& impl : impls) {
    std::vector<double> times;
    for (int r = 0; r < 3; ++r) {
      const auto start = Clock::now();
      const uint32_t c = impl.fn(0, buffer.data(), buffer.size());
      times.push_back(seconds_since(start));
      if (check == 0) check = c;
      if (c != check) {
        std::fprintf(stderr, "bench_checkpoint: %s disagrees with the software CRC\n", impl.name);
        return 1;
      }
    }
    const double t = median(times);
    std::printf("%-34s %10.4f %10.2f\n", impl.name, t, buffer.size() / t / 1e9);
    out["crc32c"].push_back({{"implementation", impl.name},
                             {"bytes", buffer.size()},
                             {"seconds", t},
                             {"gb_per_s", buffer.size() / t / 1e9}});
  }
  buffer.clear();
  buffer.shrink_to_fit();

  // 2. A large checkpoint file, loaded with and without verification.
  const int64_t floats = (mb << 20) / 4 / tensors;
  NamedTensors named;
  for (int t = 0; t < tensors; ++t) {
    Tensor x = Tensor::empty({floats});
    float* p = x.data<float>();
    for (int64_t i = 0; i < floats; ++i) p[i] = static_cast<float>((i * 31 + t) % 1000) * 1e-3f;
    named.emplace_back("tensor." + std::to_string(t), x);
  }
  const std::string path = (std::filesystem::path(dir) / "bench_checkpoint.safetensors").string();
  const auto save_start = Clock::now();
  save_safetensors(path, named);
  const double save_seconds = seconds_since(save_start);
  named.clear();
  const double bytes = static_cast<double>(std::filesystem::file_size(path));
  std::vector<double> plain, verified;
  load_safetensors(path, false);  // warm the page cache
  for (int r = 0; r < rounds; ++r) {
    auto start = Clock::now();
    load_safetensors(path, false);
    plain.push_back(seconds_since(start));
    start = Clock::now();
    load_safetensors(path, true);
    verified.push_back(seconds_since(start));
  }
  std::filesystem::remove(path);
  const double p = median(plain), v = median(verified);
  std::printf("%-34s %10.4f %10.2f\n", "save (fsync, crc as written)", save_seconds,
              bytes / save_seconds / 1e9);
  std::printf("%-34s %10.4f %10.2f\n", "load without verification (ref)", p, bytes / p / 1e9);
  std::printf("%-34s %10.4f %10.2f\n", "load with verification", v, bytes / v / 1e9);
  std::printf("verification adds %.1f%% to a load of %.0f MB from the page cache (%s)\n",
              100.0 * (v - p) / p, bytes / 1e6, crc32c_implementation());
  out["file_bytes"] = bytes;
  out["rounds"] = rounds;
  out["save_seconds"] = save_seconds;
  out["load_unverified_seconds"] = p;
  out["load_verified_seconds"] = v;
  out["verification_overhead"] = (v - p) / p;
  std::ofstream(json_path) << out.dump(2) << "\n";
  return 0;
}

}  // namespace
}  // namespace elmo

int main(int argc, char** argv) {
  try {
    return elmo::run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_checkpoint: %s\n", e.what());
    return 1;
  }
}
