// CRC32C: the standard check values, and the hardware and software versions agree on every
// length, alignment and chunking (including the three-stream path above 24 KiB).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "io/crc32c.h"
#include "runtime/rng.h"

namespace elmo {
namespace {

TEST(Crc32c, StandardCheckValues) {
  EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u);  // the catalogue's check value
  // RFC 3720 (iSCSI) B.4 test vectors.
  std::vector<unsigned char> zeros(32, 0), ones(32, 0xff), up(32), down(32);
  for (int i = 0; i < 32; ++i) up[i] = static_cast<unsigned char>(i), down[i] = 31 - i;
  EXPECT_EQ(crc32c(zeros.data(), 32), 0x8A9136AAu);
  EXPECT_EQ(crc32c(ones.data(), 32), 0x62A8AB43u);
  EXPECT_EQ(crc32c(up.data(), 32), 0x46DD794Eu);
  EXPECT_EQ(crc32c(down.data(), 32), 0x113FDB5Cu);
  EXPECT_EQ(crc32c(nullptr, 0), 0u);
  for (auto* f : {crc32c_software, crc32c_hardware}) EXPECT_EQ(f(0, "123456789", 9), 0xE3069283u);
}

TEST(Crc32c, ImplementationsAgreeOnEveryLengthAlignmentAndChunking) {
  std::vector<unsigned char> data(200000 + 16);
  Rng rng(11, 0);
  for (auto& b : data) b = static_cast<unsigned char>(rng.next_u32());
  const std::vector<size_t> lengths = {
      0, 1, 7, 8, 9, 63, 4096, 24575, 24576, 24577, 3 * 8192 * 2 + 5, 100000, 200000};
  for (const size_t n : lengths)
    for (size_t align = 0; align < 8; ++align) {
      SCOPED_TRACE(testing::Message() << "length " << n << ", offset " << align);
      const unsigned char* p = data.data() + align;
      const uint32_t soft = crc32c_software(0, p, n);
      EXPECT_EQ(crc32c_hardware(0, p, n), soft);
      EXPECT_EQ(crc32c(p, n), soft);
      // Any split gives the value of one pass.
      const size_t cut = n / 3;
      EXPECT_EQ(crc32c_extend(crc32c(p, cut), p + cut, n - cut), soft);
      EXPECT_EQ(crc32c_software(crc32c_hardware(0, p, cut), p + cut, n - cut), soft);
    }
  // One flipped bit anywhere changes the value.
  const uint32_t whole = crc32c(data.data(), 100000);
  data[54321] ^= 0x10;
  EXPECT_NE(crc32c(data.data(), 100000), whole);
  SUCCEED() << "crc32c uses " << crc32c_implementation();
}

}  // namespace
}  // namespace elmo
