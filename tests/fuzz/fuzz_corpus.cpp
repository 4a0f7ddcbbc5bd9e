// Fuzz target: the corpus reader (LineReader, is_valid_utf8, split_tokens) and vocabulary
// building over it. Invariants: is_valid_utf8 agrees with a plain RFC 3629 decoder written here;
// reading the file line by line (with the reader's smallest buffer, 4 KiB, so that longer inputs
// make lines cross refills) fails exactly when the bytes are not UTF-8; tokens hold no
// whitespace and are not empty.
#include <vector>

#include "io/corpus.h"
#include "io/vocab.h"
#include "runtime/error.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

// RFC 3629: the shortest form of a code point up to U+10FFFF that is not a surrogate.
bool plain_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    int n = 0;
    uint32_t cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      n = 1, cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2, cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3, cp = c & 0x07;
    } else {
      return false;
    }
    if (i + n >= s.size()) return false;  // truncated
    for (int k = 1; k <= n; ++k) {
      const unsigned char d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3F);
    }
    const uint32_t smallest[4] = {0, 0x80, 0x800, 0x10000};
    if (cp < smallest[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += n + 1;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  elmo::fuzz::quiet();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace elmo;
  const std::string_view bytes = fuzz::as_text(data, size);
  size_t bad = 0;
  const bool valid = is_valid_utf8(bytes, &bad);
  if (valid != plain_utf8(bytes)) fuzz::fail("is_valid_utf8 disagrees with the RFC 3629 decoder");
  if (!valid && bad >= size) fuzz::fail("the bad offset is outside the bytes");
  const std::string path = fuzz::scratch_file("corpus.txt", bytes);
  bool refused = false;
  try {
    LineReader reader(path, 1);  // 4 KiB, its minimum
    std::vector<std::string_view> tokens;
    while (reader.next_sentence(&tokens)) {
      if (tokens.empty()) fuzz::fail("a sentence without tokens");
      for (const std::string_view t : tokens) {
        if (t.empty()) fuzz::fail("an empty token");
        for (const char c : t)
          if (is_token_space(c)) fuzz::fail("whitespace inside a token");
      }
    }
  } catch (const Error&) {
    refused = true;
  }
  if (refused == valid) fuzz::fail("the reader's verdict differs from is_valid_utf8");
  try {
    build_vocab({path}, 1, 0);
  } catch (const Error&) {
  }
  return 0;
}
