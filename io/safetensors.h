// safetensors files: named tensors + string metadata, the format of checkpoints.
//
// Layout: 8-byte little-endian header length N, N bytes of JSON header
//   {"<name>": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {"<key>": "<value>"}}
// padded with spaces so the data starts at a multiple of 8, then the raw little-endian data
// (offsets are relative to the start of the data). Tensors are written in the given order,
// back to back, and read back in file order.
// What it is: a strict reader/writer of that format (every offset, size and dtype is checked,
// errors name the file). What it is not: memory-mapped or lazy; it reads every tensor.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "runtime/tensor.h"

namespace elmo {

// Ordered (name, tensor) list; names are unique.
using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

struct SafetensorsFile {
  NamedTensors tensors;                          // in file (data offset) order, CPU tensors
  std::map<std::string, std::string> metadata;  // "__metadata__", empty when absent
};

// Writes `tensors` (any device; copied to the host) crash-safely: "<path>.tmp-<pid>", fsync,
// rename, fsync of the folder. Names must be unique and non-empty, "__metadata__" is reserved.
void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// Reads and validates a whole file. Error "<path>: ..." on anything malformed: short file,
// header length beyond the file, bad JSON, unknown dtype, shape/offset mismatch, overlapping
// or out-of-range offsets, holes or trailing bytes, truncated data.
SafetensorsFile load_safetensors(const std::string& path);

// safetensors dtype names ("F32", "BF16", "F16", "I32", "I64", "U8").
const char* safetensors_dtype_name(DType dtype);

}  // namespace elmo
