// Row-major single-precision GEMM on the device of its operands:
//   C[m, n] = alpha * op(A)[m, k] @ op(B)[k, n] + beta * C       op(X) = X or X^T
// lda/ldb/ldc are the row strides of A, B and C as stored (A is [m, k] or, transposed, [k, m]).
//
// CPU: runtime/cpu_blas.h (OpenBLAS, f32), whatever the precision setting.
// CUDA: cuBLAS (cublasGemmEx) on the current stream, with the calling thread's precision:
//   kFp32  f32 inputs, f32 accumulate (no tensor-core down-conversion)
//   kTf32  f32 inputs rounded to TF32 by the tensor cores (10-bit mantissa), f32 accumulate
//   kBf16  A and B converted to bf16 by a small kernel into a per-stream scratch buffer, f32
//          accumulate, f32 C: mixed precision with f32 master weights (the caller's f32
//          tensors are never rounded in place). A caller that multiplies by the same B many
//          times (a weight, at every time step) converts it once (convert_to_bf16) and passes
//          the copy to gemm_with_bf16_b, which then converts only A.
// One cuBLAS handle per (device, stream) with its own workspace (results do not depend on
// what other streams run), created on first use and freed by release_stream_resources.
// Errors name the call, the shapes, transposes, strides, precision and device.
// What it is not: batched or strided-batched GEMM, or a cuBLASLt epilogue path.
#pragma once

#include <cstdint>
#include <string>

#include "runtime/dtype.h"

namespace elmo {

enum class GemmPrecision : uint8_t { kFp32, kTf32, kBf16 };

const char* gemm_precision_name(GemmPrecision precision);  // "fp32", "tf32", "bf16"
// Parses "fp32", "tf32" or "bf16"; throws UsageError naming the accepted values otherwise.
GemmPrecision parse_gemm_precision(const std::string& text);

// The precision CUDA GEMMs of the calling thread use (default kFp32).
GemmPrecision gemm_precision();
void set_gemm_precision(GemmPrecision precision);

// Sets the calling thread's precision for a scope.
class GemmPrecisionGuard {
 public:
  explicit GemmPrecisionGuard(GemmPrecision precision) : saved_(gemm_precision()) {
    set_gemm_precision(precision);
  }
  ~GemmPrecisionGuard() { set_gemm_precision(saved_); }
  GemmPrecisionGuard(const GemmPrecisionGuard&) = delete;
  GemmPrecisionGuard& operator=(const GemmPrecisionGuard&) = delete;

 private:
  GemmPrecision saved_;
};

// The entry point: a, b, c are pointers on `device`.
void gemm(Device device, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
          const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
          int64_t ldc);

// gemm with a bf16 copy of B: b_bf16 is B as stored ([k, n], or [n, k] with trans_b) packed
// (row stride = its row length, whatever ldb is), as convert_to_bf16 rounds it. Only a CUDA
// GEMM at kBf16 reads it (instead of converting b); the CPU, fp32 and tf32 read b. nullptr:
// exactly gemm. The copy must hold the current values of b: the caller owns that.
void gemm_with_bf16_b(Device device, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                      float alpha, const float* a, int64_t lda, const float* b,
                      const uint16_t* b_bf16, int64_t ldb, float beta, float* c, int64_t ldc);

// True when a GEMM on `device` issued by this thread now reads bf16 operands (CUDA at kBf16):
// only then is a bf16 copy worth making. CPU, fp32, tf32: false (nothing to prepare).
bool gemm_uses_bf16(Device device);

// dst[e] = bf16(src[e]) for n packed floats on `device`, the rounding of kBf16 GEMMs (round to
// nearest even; CUDA only, on the current stream).
void convert_to_bf16(Device device, const float* src, int64_t n, uint16_t* dst);

// CUDA with an explicit precision (device pointers on cuda:device, current stream); b_bf16 as
// in gemm_with_bf16_b.
void gemm_cuda(int device, GemmPrecision precision, bool trans_a, bool trans_b, int64_t m,
               int64_t n, int64_t k, float alpha, const float* a, int64_t lda, const float* b,
               int64_t ldb, float beta, float* c, int64_t ldc, const uint16_t* b_bf16 = nullptr);

// "C[m, n] = op(A)[m, k] @ op(B)[k, n] (row-major, trans_a .., lda ..)" for error messages.
std::string gemm_shape_text(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                            int64_t lda, int64_t ldb, int64_t ldc);

// Throws Error naming the shapes when a stride is smaller than its row or a size is negative.
void check_gemm_args(const char* where, bool trans_a, bool trans_b, int64_t m, int64_t n,
                     int64_t k, int64_t lda, int64_t ldb, int64_t ldc);

// bf16 conversion used by kBf16: dst[r, c] = bf16(src[r * ld + c]) for a [rows, cols] region,
// round to nearest even; dst is packed (row stride cols). Device pointers, current stream.
void convert_to_bf16_cuda(const float* src, int64_t rows, int64_t cols, int64_t ld, void* dst);

}  // namespace elmo
