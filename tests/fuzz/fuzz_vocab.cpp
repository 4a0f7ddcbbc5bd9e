// Fuzz target: vocabulary files (Vocab::load). Invariants of an accepted vocabulary: the three
// special tokens are in it, every token maps back to its id, and save + load gives the same
// vocabulary (same hash).
#include "io/vocab.h"
#include "runtime/error.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  elmo::fuzz::quiet();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace elmo;
  const std::string path = fuzz::scratch_file("vocab.txt", fuzz::as_text(data, size));
  Vocab vocab;
  try {
    vocab = Vocab::load(path);
  } catch (const Error&) {
    return 0;
  }
  if (!vocab.contains(kBosToken) || !vocab.contains(kEosToken) || !vocab.contains(kUnkToken))
    fuzz::fail("a special token is missing");
  for (int32_t id = 0; id < vocab.size(); ++id)
    if (vocab.id(vocab.token(id)) != id) fuzz::fail("a token does not map back to its id");
  const std::string saved = fuzz::scratch_dir() + "/saved.txt";
  vocab.save(saved);
  if (Vocab::load(saved).hash() != vocab.hash()) fuzz::fail("save + load changed the vocabulary");
  return 0;
}
