// CRC32C (Castagnoli, reflected polynomial 0x82F63B78): the per-tensor checksum of checkpoint
// files (io/safetensors.h), the CRC that TensorFlow's checkpoint bundles, iSCSI and ext4 use.
//
// crc32c(data) is the standard value (initial ~0, final xor ~0): crc32c("123456789") ==
// 0xE3069283. crc32c_extend continues a running value over the next bytes, so any chunking
// gives the same result as one call over the whole buffer.
//
// Two implementations, the same values: the SSE4.2 crc32 instruction (three interleaved
// streams over 8 KiB blocks, combined with a precomputed shift table; ~3x one stream), chosen
// at run time when the CPU has it, and a portable slicing-by-8 table version for other CPUs.
// BENCHMARKS.md ("Checkpoint checksums") has their throughput.
// What it is not: a cryptographic hash (it detects damage, not tampering).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace elmo {

uint32_t crc32c(const void* data, size_t bytes);
// crc32c(a + b) == crc32c_extend(crc32c(a), b)
uint32_t crc32c_extend(uint32_t crc, const void* data, size_t bytes);

// As files store it: 8 lowercase hex digits. parse_crc32c_hex accepts exactly that form.
std::string crc32c_hex(uint32_t crc);
bool parse_crc32c_hex(const std::string& text, uint32_t* crc);

// The implementations, for tests and the benchmark.
uint32_t crc32c_software(uint32_t crc, const void* data, size_t bytes);
bool crc32c_hardware_available();
// The crc32 instruction; the software version on CPUs without SSE4.2.
uint32_t crc32c_hardware(uint32_t crc, const void* data, size_t bytes);
const char* crc32c_implementation();  // the one crc32c() uses: "sse4.2" or "software"

}  // namespace elmo
