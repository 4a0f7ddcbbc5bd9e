// safetensors files: named tensors + string metadata, the format of checkpoints.
//
// Layout: 8-byte little-endian header length N, N bytes of JSON header
//   {"<name>": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {"<key>": "<value>"}}
// padded with spaces so the data starts at a multiple of 8, then the raw little-endian data
// (offsets are relative to the start of the data). Tensors are written in the given order,
// back to back, and read back in file order.
// Checksums: every file written here carries, in "__metadata__", "checksums": "crc32c" and per
// tensor "crc32c:<name>": 8 lowercase hex digits, the CRC32C (io/crc32c.h) of the tensor's data
// bytes, computed as they are written (the header is written first with zeros in their place and
// rewritten once the data is out; it has the same length). The reader verifies every tensor
// against it and refuses a mismatch (ChecksumError, naming the file and tensor). A file without
// "checksums" (written before they existed, or by another program) loads unverified and says so
// in SafetensorsFile::checksummed. These keys are not returned in `metadata` and callers may not
// pass them.
// What it is: a strict reader/writer of that format (every offset, size and dtype is checked,
// errors name the file). What it is not: memory-mapped or lazy; it reads every tensor.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "runtime/error.h"
#include "runtime/tensor.h"

namespace elmo {

// Ordered (name, tensor) list; names are unique.
using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

struct SafetensorsFile {
  NamedTensors tensors;                          // in file (data offset) order, CPU tensors
  std::map<std::string, std::string> metadata;   // "__metadata__" without the checksum keys
  bool checksummed = false;  // the file carries per-tensor CRC32Cs (verified when loading)
};

// A tensor whose data does not match its stored checksum: the file is damaged.
class ChecksumError : public Error {
 public:
  ChecksumError(const std::string& path, const std::string& tensor, uint32_t stored,
                uint32_t actual);
  const std::string& path() const { return path_; }
  const std::string& tensor() const { return tensor_; }

 private:
  std::string path_, tensor_;
};

// Writes `tensors` (any device; copied to the host) crash-safely: "<path>.tmp-<pid>", fsync,
// rename, fsync of the folder. Names must be unique and non-empty, "__metadata__" is reserved.
void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// Reads and validates a whole file. Error "<path>: ..." on anything malformed: short file,
// header length beyond the file, bad JSON, unknown dtype, shape/offset mismatch, overlapping
// or out-of-range offsets, holes or trailing bytes, truncated data, a missing or malformed
// checksum in a checksummed file; ChecksumError when a tensor's data does not match its
// checksum. verify_checksums = false skips computing them (benchmarks measure the cost so).
SafetensorsFile load_safetensors(const std::string& path, bool verify_checksums = true);

// The same checks on a whole file image held in memory (`origin` names it in messages): what
// load_safetensors does after reading, exposed for the fuzzer (tests/fuzz).
SafetensorsFile parse_safetensors(std::string_view bytes, const std::string& origin,
                                  bool verify_checksums = true);

// safetensors dtype names ("F32", "BF16", "F16", "I32", "I64", "U8").
const char* safetensors_dtype_name(DType dtype);

}  // namespace elmo
