// Shared by the fuzz targets (tests/fuzz/README.md): each target is a libFuzzer entry point,
// LLVMFuzzerTestOneInput, compiled into a fuzzer with clang (ELMO_FUZZ=ON) and, in the normal
// build, into replay_<target> with replay_main.cpp, which runs every stored input through it.
//
// The contract every target checks: whatever the bytes, the parser returns or throws
// elmo::Error (the clear-error path); any other exception escapes the target and is reported as
// a crash, like a sanitizer finding, an abort or a hang.
#pragma once

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>

#include "io/atomic_file.h"
#include "runtime/log.h"

namespace elmo::fuzz {

// A folder of this process for the files a target must write (in /dev/shm when there is one),
// removed at exit.
inline const std::string& scratch_dir() {
  // Never destroyed: the exit handler that removes the folder runs after static destructors.
  static const std::string* dir = [] {
    namespace fs = std::filesystem;
    const fs::path base =
        fs::is_directory("/dev/shm") ? fs::path("/dev/shm") : fs::temp_directory_path();
    const fs::path d = base / ("elmo-fuzz-" + std::to_string(::getpid()));
    fs::create_directories(d);
    auto* path = new std::string(d.string());
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(scratch_dir(), ec);
    });
    return path;
  }();
  return *dir;
}

// Writes `bytes` to scratch_dir()/name (plainly: speed matters more than atomicity here).
inline std::string scratch_file(const std::string& name, std::string_view bytes) {
  const std::string path = scratch_dir() + "/" + name;
  write_file_atomic(path, bytes);
  return path;
}

inline std::string_view as_text(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// Logs only errors: the parsers' warnings for every input would drown the fuzzer's output.
inline void quiet() { set_log_level(LogLevel::kError); }

// A broken invariant (not a refused input): report it as a crash.
[[noreturn]] inline void fail(const char* what) {
  std::fprintf(stderr, "fuzz invariant broken: %s\n", what);
  std::abort();
}

}  // namespace elmo::fuzz
