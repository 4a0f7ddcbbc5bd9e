// CRC32C, hardware and software: see crc32c.h.
#include "io/crc32c.h"

#include <array>
#include <cstdio>
#include <cstring>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace elmo {

namespace {

constexpr uint32_t kPolynomial = 0x82F63B78u;  // reflected Castagnoli

// Slicing-by-8 tables: kTables[0] is the byte-at-a-time table, kTables[k][i] advances
// kTables[k - 1][i] by one more zero byte.
using Tables = std::array<std::array<uint32_t, 256>, 8>;
constexpr Tables make_tables() {
  Tables t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int b = 0; b < 8; ++b) c = (c & 1) ? (c >> 1) ^ kPolynomial : c >> 1;
    t[0][i] = c;
  }
  for (int k = 1; k < 8; ++k)
    for (int i = 0; i < 256; ++i) t[k][i] = (t[k - 1][i] >> 8) ^ t[0][t[k - 1][i] & 0xff];
  return t;
}
constexpr Tables kTables = make_tables();

uint64_t load64(const unsigned char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);  // little-endian hosts (the checkpoint format requires them)
  return v;
}

// The CRC register (no pre/post inversion) advanced over `bytes`.
uint32_t software_register(uint32_t reg, const unsigned char* p, size_t bytes) {
  while (bytes > 0 && (reinterpret_cast<uintptr_t>(p) & 7) != 0) {
    reg = (reg >> 8) ^ kTables[0][(reg ^ *p++) & 0xff];
    --bytes;
  }
  for (; bytes >= 8; bytes -= 8, p += 8) {
    const uint64_t w = load64(p) ^ reg;
    reg = kTables[7][w & 0xff] ^ kTables[6][(w >> 8) & 0xff] ^ kTables[5][(w >> 16) & 0xff] ^
          kTables[4][(w >> 24) & 0xff] ^ kTables[3][(w >> 32) & 0xff] ^
          kTables[2][(w >> 40) & 0xff] ^ kTables[1][(w >> 48) & 0xff] ^ kTables[0][w >> 56];
  }
  while (bytes-- > 0) reg = (reg >> 8) ^ kTables[0][(reg ^ *p++) & 0xff];
  return reg;
}

#if defined(__x86_64__)

// Three streams of kBlock bytes each run through the crc32 instruction side by side (its
// latency is 3 cycles, its throughput 1 per cycle), then are joined: advancing a register over
// A then B equals advancing it over len(B) zero bytes (a linear map, `Shift`) xor B's register
// from zero.
constexpr size_t kBlock = 8192;

__attribute__((target("sse4.2"))) uint32_t zeros_register(uint32_t reg, size_t bytes) {
  uint64_t r = reg;
  for (size_t i = 0; i < bytes / 8; ++i) r = _mm_crc32_u64(r, 0);
  return static_cast<uint32_t>(r);
}

// The register advanced over kBlock zero bytes, by byte of the register: 4 table lookups.
struct Shift {
  std::array<std::array<uint32_t, 256>, 4> table;
  Shift() {
    for (int k = 0; k < 4; ++k)
      for (uint32_t v = 0; v < 256; ++v) table[k][v] = zeros_register(v << (8 * k), kBlock);
  }
  uint32_t operator()(uint32_t reg) const {
    return table[0][reg & 0xff] ^ table[1][(reg >> 8) & 0xff] ^ table[2][(reg >> 16) & 0xff] ^
           table[3][reg >> 24];
  }
};

__attribute__((target("sse4.2"))) uint32_t hardware_register(uint32_t reg, const unsigned char* p,
                                                             size_t bytes) {
  while (bytes > 0 && (reinterpret_cast<uintptr_t>(p) & 7) != 0) {
    reg = _mm_crc32_u8(reg, *p++);
    --bytes;
  }
  if (bytes >= 3 * kBlock) {
    static const Shift shift;  // built once (about a million crc32 instructions)
    while (bytes >= 3 * kBlock) {
      uint64_t c0 = reg, c1 = 0, c2 = 0;
      const unsigned char* p1 = p + kBlock;
      const unsigned char* p2 = p + 2 * kBlock;
      for (size_t i = 0; i < kBlock; i += 8) {
        c0 = _mm_crc32_u64(c0, load64(p + i));
        c1 = _mm_crc32_u64(c1, load64(p1 + i));
        c2 = _mm_crc32_u64(c2, load64(p2 + i));
      }
      reg = shift(shift(static_cast<uint32_t>(c0)) ^ static_cast<uint32_t>(c1)) ^
            static_cast<uint32_t>(c2);
      p += 3 * kBlock;
      bytes -= 3 * kBlock;
    }
  }
  uint64_t r = reg;
  for (; bytes >= 8; bytes -= 8, p += 8) r = _mm_crc32_u64(r, load64(p));
  reg = static_cast<uint32_t>(r);
  while (bytes-- > 0) reg = _mm_crc32_u8(reg, *p++);
  return reg;
}

#endif

bool hardware() {
#if defined(__x86_64__)
  static const bool available = __builtin_cpu_supports("sse4.2");
  return available;
#else
  return false;
#endif
}

}  // namespace

uint32_t crc32c_software(uint32_t crc, const void* data, size_t bytes) {
  return ~software_register(~crc, static_cast<const unsigned char*>(data), bytes);
}

bool crc32c_hardware_available() { return hardware(); }

uint32_t crc32c_hardware(uint32_t crc, const void* data, size_t bytes) {
#if defined(__x86_64__)
  if (hardware()) return ~hardware_register(~crc, static_cast<const unsigned char*>(data), bytes);
#endif
  return crc32c_software(crc, data, bytes);
}

uint32_t crc32c_extend(uint32_t crc, const void* data, size_t bytes) {
  return hardware() ? crc32c_hardware(crc, data, bytes) : crc32c_software(crc, data, bytes);
}

uint32_t crc32c(const void* data, size_t bytes) { return crc32c_extend(0, data, bytes); }

std::string crc32c_hex(uint32_t crc) {
  char text[9];
  std::snprintf(text, sizeof text, "%08x", crc);
  return text;
}

bool parse_crc32c_hex(const std::string& text, uint32_t* crc) {
  if (text.size() != 8) return false;
  uint32_t v = 0;
  for (const char c : text) {
    if (c >= '0' && c <= '9')
      v = v * 16 + static_cast<uint32_t>(c - '0');
    else if (c >= 'a' && c <= 'f')
      v = v * 16 + static_cast<uint32_t>(c - 'a' + 10);
    else
      return false;
  }
  *crc = v;
  return true;
}

const char* crc32c_implementation() { return hardware() ? "sse4.2" : "software"; }

}  // namespace elmo
