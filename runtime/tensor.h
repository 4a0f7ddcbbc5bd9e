// Tensor: a typed, shaped, contiguous view of storage on one device.
//
// What it is: shape (up to 4 dims), dtype, device, and shared ownership of an aligned CPU
// allocation or a stream-ordered CUDA allocation. Views (reshape, rows) share storage.
// What it is not: an autograd or expression system. Every layer has explicit forward and
// backward functions over raw pointers; Tensor only carries buffers and checks them.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "runtime/dtype.h"
#include "runtime/error.h"

namespace elmo {

class Shape {
 public:
  static constexpr int kMaxDims = 4;
  Shape() = default;
  Shape(std::initializer_list<int64_t> dims);
  explicit Shape(const std::vector<int64_t>& dims);

  int ndim() const { return ndim_; }
  int64_t operator[](int d) const { return dims_[d]; }
  int64_t numel() const;
  std::vector<int64_t> vec() const { return {dims_.begin(), dims_.begin() + ndim_}; }
  std::string str() const;  // "[3, 4]"
  bool operator==(const Shape& other) const;

 private:
  std::array<int64_t, kMaxDims> dims_{};
  int ndim_ = 0;
};

// Raw memory of one device. CPU: 64-byte aligned. CUDA: cudaMallocAsync on the current stream.
class Storage {
 public:
  Storage(size_t bytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
  Device device_;
};

class Tensor {
 public:
  Tensor() = default;

  static Tensor empty(const Shape& shape, DType dtype = DType::kF32, Device device = Device::cpu());
  static Tensor zeros(const Shape& shape, DType dtype = DType::kF32, Device device = Device::cpu());
  static Tensor from_floats(const std::vector<float>& values, const Shape& shape);

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int ndim() const { return shape_.ndim(); }
  int64_t size(int d) const { return shape_[d]; }
  int64_t numel() const { return shape_.numel(); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  DType dtype() const { return dtype_; }
  Device device() const { return storage_ ? storage_->device() : Device::cpu(); }

  void* raw() const { return static_cast<char*>(storage_->data()) + offset_; }
  template <typename T>
  T* data() const {
    ELMO_CHECK(defined(), "data() of an undefined tensor");
    ELMO_CHECK(dtype_ == dtype_of<T>(), "tensor is ", dtype_name(dtype_), ", asked for ",
               dtype_name(dtype_of<T>()));
    return static_cast<T*>(raw());
  }

  // Same storage, new shape with the same number of elements.
  Tensor reshape(const Shape& shape) const;
  // Rows [begin, end) along dim 0 (a view).
  Tensor rows(int64_t begin, int64_t end) const;

  Tensor to(Device device) const;
  Tensor clone() const;
  void copy_from(const Tensor& src);  // same shape and dtype; any pair of devices
  void zero_();
  void fill_(float value);  // f32 CPU tensors
  std::vector<float> to_floats() const;  // f32 tensor, any device, copied to the host

  std::string describe() const;  // "f32[3, 4]@cpu"

 private:
  std::shared_ptr<Storage> storage_;
  size_t offset_ = 0;  // bytes
  Shape shape_;
  DType dtype_ = DType::kF32;
};

// Host memory `host` [bytes] made readable on `device`: `host` itself on the CPU; on CUDA the
// data of `staging` (a u8 tensor on the device, replaced when too small) after an asynchronous
// pinned upload on the current stream (runtime/pinned.h). Keep `staging` (and, on the CPU,
// `host`) alive and unchanged while the device reads it.
const void* host_data_on(Device device, const void* host, size_t bytes, Tensor& staging);

// Checks used by op entry points: "<what>: expected f32[4, 8]@cpu, got f32[4, 9]@cpu".
void check_tensor(const Tensor& t, const char* what, DType dtype, const Shape& shape);
void check_same_device(const Tensor& a, const Tensor& b, const char* what);

}  // namespace elmo
