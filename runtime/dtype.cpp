#include "runtime/dtype.h"

#include "runtime/error.h"

namespace elmo {

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kF32: return 4;
    case DType::kBF16: return 2;
    case DType::kF16: return 2;
    case DType::kI32: return 4;
    case DType::kI64: return 8;
    case DType::kU8: return 1;
  }
  return 0;
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "f32";
    case DType::kBF16: return "bf16";
    case DType::kF16: return "f16";
    case DType::kI32: return "i32";
    case DType::kI64: return "i64";
    case DType::kU8: return "u8";
  }
  return "?";
}

Device Device::parse(const std::string& text) {
  if (text == "cpu") return cpu();
  if (text == "cuda") return cuda(0);
  if (text.rfind("cuda:", 0) == 0) {
    const std::string digits = text.substr(5);
    if (!digits.empty() && digits.size() < 4 &&
        digits.find_first_not_of("0123456789") == std::string::npos)
      return cuda(std::stoi(digits));
  }
  throw UsageError(elmo::str("unknown device '", text, "': use cpu, cuda or cuda:N"));
}

std::string Device::str() const { return is_cpu() ? "cpu" : elmo::str("cuda:", index); }

}  // namespace elmo
