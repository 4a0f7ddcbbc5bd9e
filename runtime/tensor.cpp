#include "runtime/tensor.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "runtime/cuda_memory.h"
#include "runtime/pinned.h"

namespace elmo {

Shape::Shape(std::initializer_list<int64_t> dims) : Shape(std::vector<int64_t>(dims)) {}

Shape::Shape(const std::vector<int64_t>& dims) {
  ELMO_CHECK(dims.size() <= kMaxDims, "tensors have at most ", kMaxDims, " dims, got ",
             dims.size());
  ndim_ = static_cast<int>(dims.size());
  for (int d = 0; d < ndim_; ++d) {
    ELMO_CHECK(dims[d] >= 0, "negative dimension ", dims[d]);
    dims_[d] = dims[d];
  }
}

int64_t Shape::numel() const {
  int64_t n = 1;
  for (int d = 0; d < ndim_; ++d) n *= dims_[d];
  return n;
}

std::string Shape::str() const {
  std::string s = "[";
  for (int d = 0; d < ndim_; ++d) s += (d ? ", " : "") + std::to_string(dims_[d]);
  return s + "]";
}

bool Shape::operator==(const Shape& other) const {
  if (ndim_ != other.ndim_) return false;
  for (int d = 0; d < ndim_; ++d)
    if (dims_[d] != other.dims_[d]) return false;
  return true;
}

Storage::Storage(size_t bytes, Device device) : bytes_(bytes), device_(device) {
  if (device.is_cpu()) {
    const size_t rounded = (std::max<size_t>(bytes, 1) + 63) / 64 * 64;
    data_ = std::aligned_alloc(64, rounded);
    ELMO_CHECK(data_ != nullptr, "out of host memory allocating ", bytes, " bytes");
  } else {
    data_ = cuda_allocate(bytes, device.index);
  }
}

Storage::~Storage() {
  if (device_.is_cpu())
    std::free(data_);
  else
    cuda_release(data_, device_.index);
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  Tensor t;
  t.storage_ = std::make_shared<Storage>(shape.numel() * dtype_size(dtype), device);
  t.shape_ = shape;
  t.dtype_ = dtype;
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.zero_();
  return t;
}

Tensor Tensor::from_floats(const std::vector<float>& values, const Shape& shape) {
  ELMO_CHECK(static_cast<int64_t>(values.size()) == shape.numel(), values.size(),
             " values for shape ", shape.str());
  Tensor t = empty(shape);
  if (!values.empty()) std::memcpy(t.raw(), values.data(), values.size() * sizeof(float));
  return t;
}

Tensor Tensor::reshape(const Shape& shape) const {
  ELMO_CHECK(shape.numel() == numel(), "cannot reshape ", describe(), " to ", shape.str());
  Tensor t = *this;
  t.shape_ = shape;
  return t;
}

Tensor Tensor::rows(int64_t begin, int64_t end) const {
  ELMO_CHECK(ndim() >= 1 && 0 <= begin && begin <= end && end <= size(0), "rows [", begin, ", ",
             end, ") of ", describe());
  std::vector<int64_t> dims = shape_.vec();
  const int64_t row_elems = dims[0] ? numel() / dims[0] : 0;
  dims[0] = end - begin;
  Tensor t = *this;
  t.shape_ = Shape(dims);
  t.offset_ += static_cast<size_t>(begin * row_elems) * dtype_size(dtype_);
  return t;
}

Tensor Tensor::to(Device device) const {
  if (device == this->device()) return *this;
  Tensor t = empty(shape_, dtype_, device);
  t.copy_from(*this);
  return t;
}

Tensor Tensor::clone() const {
  Tensor t = empty(shape_, dtype_, device());
  t.copy_from(*this);
  return t;
}

void Tensor::copy_from(const Tensor& src) {
  ELMO_CHECK(src.shape_ == shape_ && src.dtype_ == dtype_, "copy from ", src.describe(), " to ",
             describe());
  if (nbytes() == 0) return;
  if (device().is_cpu() && src.device().is_cpu())
    std::memmove(raw(), src.raw(), nbytes());
  else
    cuda_copy(raw(), device(), src.raw(), src.device(), nbytes());
}

void Tensor::zero_() {
  if (nbytes() == 0) return;
  if (device().is_cpu())
    std::memset(raw(), 0, nbytes());
  else
    cuda_zero(raw(), device().index, nbytes());
}

void Tensor::fill_(float value) {
  ELMO_CHECK(dtype_ == DType::kF32 && device().is_cpu(), "fill_ needs an f32 CPU tensor, got ",
             describe());
  float* p = data<float>();
  for (int64_t i = 0; i < numel(); ++i) p[i] = value;
}

std::vector<float> Tensor::to_floats() const {
  ELMO_CHECK(dtype_ == DType::kF32, "to_floats of ", describe());
  std::vector<float> out(numel());
  Tensor host = to(Device::cpu());
  if (!out.empty()) std::memcpy(out.data(), host.raw(), nbytes());
  return out;
}

std::string Tensor::describe() const {
  return str(dtype_name(dtype_), shape_.str(), "@", device().str());
}

const void* host_data_on(Device device, const void* host, size_t bytes, Tensor& staging) {
  if (device.is_cpu()) return host;
  const int64_t n = std::max<int64_t>(static_cast<int64_t>(bytes), 1);
  if (!staging.defined() || staging.nbytes() < static_cast<size_t>(n) ||
      !(staging.device() == device))
    staging = Tensor::empty({n}, DType::kU8, device);
  upload_to_device(device.index, staging.raw(), host, bytes);
  return staging.raw();
}

void check_tensor(const Tensor& t, const char* what, DType dtype, const Shape& shape) {
  ELMO_CHECK(t.defined(), what, ": undefined tensor");
  ELMO_CHECK(t.dtype() == dtype && t.shape() == shape, what, ": expected ", dtype_name(dtype),
             shape.str(), ", got ", t.describe());
}

void check_same_device(const Tensor& a, const Tensor& b, const char* what) {
  ELMO_CHECK(a.device() == b.device(), what, ": operands on ", a.device().str(), " and ",
             b.device().str(), " (no implicit copies)");
}

}  // namespace elmo
