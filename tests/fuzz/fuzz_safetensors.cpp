// Fuzz target: safetensors files (parse_safetensors, what load_safetensors runs on the bytes it
// reads; header JSON, offsets, dtypes, checksums). Invariant: a file that loads writes back to a
// file that loads to the same tensors.
#include <cstring>

#include "io/safetensors.h"
#include "runtime/error.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  elmo::fuzz::quiet();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace elmo;
  SafetensorsFile file;
  try {
    file = parse_safetensors(fuzz::as_text(data, size), "fuzz.safetensors");
  } catch (const Error&) {
    return 0;
  }
  const std::string path = fuzz::scratch_dir() + "/again.safetensors";
  try {
    save_safetensors(path, file.tensors, file.metadata);
  } catch (const Error& e) {
    // Names the writer refuses but the reader takes are not a crash; report what they were.
    std::fprintf(stderr, "write-back refused: %s\n", e.what());
    return 0;
  }
  const SafetensorsFile again = load_safetensors(path);
  if (again.tensors.size() != file.tensors.size()) fuzz::fail("write-back lost tensors");
  for (size_t i = 0; i < file.tensors.size(); ++i) {
    const Tensor& a = file.tensors[i].second;
    const Tensor& b = again.tensors[i].second;
    if (again.tensors[i].first != file.tensors[i].first || a.nbytes() != b.nbytes() ||
        std::memcmp(a.raw(), b.raw(), a.nbytes()) != 0)
      fuzz::fail("write-back changed a tensor");
  }
  return 0;
}
