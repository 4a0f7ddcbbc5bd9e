// Fuzz target: what the rendezvous server parses from the network (comm/rendezvous.h): a frame
// length (4 bytes, then the limits before and after the handshake), the handshake frame and a
// request frame. The same input goes through all three. Invariants: the parsers never throw, a
// frame length above its limit is refused, and an accepted request's fields fit in the frame.
#include <cmath>

#include "comm/rendezvous.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  elmo::fuzz::quiet();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace elmo;
  std::string error;
  if (size >= 4) {
    for (const uint32_t limit : {uint32_t{64} << 10, uint32_t{64} << 20}) {
      const std::optional<uint32_t> length = parse_rendezvous_frame_length(data, limit, &error);
      if (length && *length > limit) fuzz::fail("a frame above the limit was accepted");
    }
  }
  const std::string payload(fuzz::as_text(data, size));
  if (const auto hello = parse_rendezvous_hello(payload, &error))
    if (hello->token.size() + hello->host.size() > size || hello->host.size() > 255)
      fuzz::fail("a handshake with fields larger than its frame");
  if (const auto request = parse_rendezvous_request(payload, &error)) {
    if (request->key.size() + request->value.size() >= size)
      fuzz::fail("a request with fields larger than its frame");
    if (std::isnan(request->timeout_s)) fuzz::fail("a NaN wait was accepted");
  }
  return 0;
}
