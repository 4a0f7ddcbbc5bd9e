// Element types and devices of tensors.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace elmo {

enum class DType : uint8_t { kF32, kBF16, kF16, kI32, kI64, kU8 };

size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);  // "f32", "bf16", ... (safetensors uses its own names)

template <typename T>
constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::kF32; }
template <> constexpr DType dtype_of<int32_t>() { return DType::kI32; }
template <> constexpr DType dtype_of<int64_t>() { return DType::kI64; }
template <> constexpr DType dtype_of<uint8_t>() { return DType::kU8; }

// Where a tensor lives. Ops dispatch on it; a mismatch between operands is an error.
struct Device {
  enum class Kind : uint8_t { kCpu, kCuda };
  Kind kind = Kind::kCpu;
  int index = 0;

  static Device cpu() { return {Kind::kCpu, 0}; }
  static Device cuda(int index) { return {Kind::kCuda, index}; }
  // Parses "cpu", "cuda", "cuda:N"; throws UsageError otherwise.
  static Device parse(const std::string& text);

  bool is_cpu() const { return kind == Kind::kCpu; }
  bool is_cuda() const { return kind == Kind::kCuda; }
  std::string str() const;
  bool operator==(const Device& other) const = default;
};

}  // namespace elmo
