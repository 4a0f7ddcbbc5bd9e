// Runs stored inputs through a fuzz target's entry point (the normal build's replay_<target>):
//   replay_<target> FILE_OR_FOLDER...   every regular file, folders one level deep
// Exit 0 when every input was refused cleanly or accepted; a crash, an abort or an escaping
// exception fails the run, naming the input. libFuzzer is not needed (gcc builds it).
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <string>
#include <vector>

#include "io/atomic_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
extern "C" __attribute__((weak)) int LLVMFuzzerInitialize(int* argc, char*** argv);

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  if (LLVMFuzzerInitialize) LLVMFuzzerInitialize(&argc, &argv);
  std::vector<std::string> inputs;
  for (int i = 1; i < argc; ++i) {
    if (fs::is_directory(argv[i])) {
      for (const auto& e : fs::directory_iterator(argv[i]))
        if (e.is_regular_file()) inputs.push_back(e.path().string());
    } else {
      inputs.push_back(argv[i]);
    }
  }
  std::sort(inputs.begin(), inputs.end());
  if (inputs.empty()) {
    std::fprintf(stderr, "replay: no inputs in the given paths\n");
    return 1;
  }
  for (const std::string& path : inputs) {
    const std::string bytes = elmo::read_file(path);
    std::fprintf(stderr, "replay: %s (%zu bytes)\n", path.c_str(), bytes.size());
    try {
      LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    } catch (const std::exception& e) {
      std::fprintf(stderr, "replay: %s: exception escaped the target: %s\n", path.c_str(),
                   e.what());
      return 1;
    }
  }
  std::printf("replay: %zu input(s) ran cleanly\n", inputs.size());
  return 0;
}
