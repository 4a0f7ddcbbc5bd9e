// The device-neutral half of runtime/gemm.h: the precision setting, the argument checks and the
// dispatch (OpenBLAS on the CPU; gemm_cuda, in gemm.cpp, on CUDA). Built in CPU-only builds too,
// where gemm_cuda is runtime/no_cuda.cpp's refusal.
#include <algorithm>

#include "runtime/cpu_blas.h"
#include "runtime/error.h"
#include "runtime/gemm.h"

namespace elmo {

namespace {
thread_local GemmPrecision g_precision = GemmPrecision::kFp32;
}  // namespace

const char* gemm_precision_name(GemmPrecision precision) {
  switch (precision) {
    case GemmPrecision::kFp32:
      return "fp32";
    case GemmPrecision::kTf32:
      return "tf32";
    case GemmPrecision::kBf16:
      return "bf16";
  }
  return "unknown";
}

GemmPrecision parse_gemm_precision(const std::string& text) {
  if (text == "fp32") return GemmPrecision::kFp32;
  if (text == "tf32") return GemmPrecision::kTf32;
  if (text == "bf16") return GemmPrecision::kBf16;
  throw UsageError(
      str("GEMM precision \"", text, "\" is not known; use \"fp32\", \"tf32\" or ", "\"bf16\""));
}

GemmPrecision gemm_precision() { return g_precision; }
void set_gemm_precision(GemmPrecision precision) { g_precision = precision; }

std::string gemm_shape_text(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                            int64_t lda, int64_t ldb, int64_t ldc) {
  return str("C[", m, ", ", n, "] = op(A)[", m, ", ", k, "] @ op(B)[", k, ", ", n,
             "] (row-major, trans_a ", trans_a ? "yes" : "no", ", trans_b ", trans_b ? "yes" : "no",
             ", lda ", lda, ", ldb ", ldb, ", ldc ", ldc, ")");
}

void check_gemm_args(const char* where, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                     int64_t lda, int64_t ldb, int64_t ldc) {
  const int64_t a_cols = trans_a ? m : k, b_cols = trans_b ? k : n;
  const bool ok = m >= 0 && n >= 0 && k >= 0 && lda >= std::max<int64_t>(1, a_cols) &&
                  ldb >= std::max<int64_t>(1, b_cols) && ldc >= std::max<int64_t>(1, n);
  ELMO_CHECK(ok, where, ": invalid GEMM arguments: ",
             gemm_shape_text(trans_a, trans_b, m, n, k, lda, ldb, ldc),
             "; every stride must be at least the row length of its matrix as stored");
}

void gemm(Device device, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
          const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
          int64_t ldc) {
  if (device.is_cpu()) {
    check_gemm_args("gemm", trans_a, trans_b, m, n, k, lda, ldb, ldc);
    cpu_gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  gemm_cuda(device.index, g_precision, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c,
            ldc);
}

void gemm_with_bf16_b(Device device, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                      float alpha, const float* a, int64_t lda, const float* b,
                      const uint16_t* b_bf16, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (device.is_cpu()) {
    gemm(device, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  gemm_cuda(device.index, g_precision, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c,
            ldc, b_bf16);
}

bool gemm_uses_bf16(Device device) {
  return device.is_cuda() && g_precision == GemmPrecision::kBf16;
}

void convert_to_bf16(Device device, const float* src, int64_t n, uint16_t* dst) {
  ELMO_CHECK(device.is_cuda(), "convert_to_bf16: ", device.str(), " (the CPU GEMMs are fp32 only)");
  ELMO_CHECK(n >= 0, "convert_to_bf16: negative count ", n);
  convert_to_bf16_cuda(src, 1, n, n, dst);
}

}  // namespace elmo
