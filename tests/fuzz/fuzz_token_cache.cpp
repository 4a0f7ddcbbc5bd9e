// Fuzz target: token cache files (check_token_cache_image, what open_or_build runs on a cache
// file before it maps it into training). Input: a cache image, used as it is and, when its first
// byte is odd, with its checksums rewritten to match (seal_token_cache_image), so that the checks
// behind the checksums see fuzzed headers and bodies too. Invariant: an image that passes is
// safe to read as a token shard: every offset and id inside the image, every sentence ended.
#include <cstring>
#include <vector>

#include "io/token_cache.h"
#include "runtime/error.h"
#include "tests/fuzz/fuzz_util.h"

namespace {
// The source and vocabulary the seeds were built for (tests/fuzz/corpus/token_cache/README).
const elmo::TokenCacheSource kSource{"/fuzz/corpus.txt", 24, 1000000000};
constexpr uint64_t kVocabHash = 0x1234567890abcdefull;
constexpr uint64_t kVocabSize = 7;
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  elmo::fuzz::quiet();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace elmo;
  std::string image(fuzz::as_text(data, size));
  if (size > 0 && (data[0] & 1)) {
    try {
      seal_token_cache_image(image);
    } catch (const Error&) {
      return 0;
    }
  }
  // Copied to 8-byte aligned memory, as a mapping is.
  std::vector<uint64_t> aligned((image.size() + 7) / 8 + 1);
  std::memcpy(aligned.data(), image.data(), image.size());
  const std::string_view view(reinterpret_cast<const char*>(aligned.data()), image.size());
  for (const bool verify : {false, true}) {
    bool corrupt = false;
    const std::string why =
        check_token_cache_image(view, kSource, kVocabHash, kVocabSize, verify, &corrupt);
    if (!why.empty() || !verify) continue;
    // Passed with the body verified: read it as the batcher would.
    uint32_t header_bytes = 0;
    uint64_t sentences = 0, ids_count = 0;
    std::memcpy(&header_bytes, view.data() + 12, 4);
    std::memcpy(&sentences, view.data() + 48, 8);
    std::memcpy(&ids_count, view.data() + 72, 8);
    const auto* ids = reinterpret_cast<const uint32_t*>(view.data() + header_bytes);
    const auto* offsets =
        reinterpret_cast<const uint64_t*>(view.data() + header_bytes + (ids_count * 4 + 7) / 8 * 8);
    if (reinterpret_cast<const char*>(offsets + sentences + 1) > view.data() + view.size())
      fuzz::fail("offsets beyond the image");
    for (uint64_t i = 0; i < sentences; ++i)
      if (offsets[i + 1] > ids_count || ids[offsets[i + 1] - 1] != kSentenceEnd)
        fuzz::fail("a sentence that does not end inside the ids");
  }
  return 0;
}
