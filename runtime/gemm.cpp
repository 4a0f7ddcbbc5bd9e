// The CUDA half of runtime/gemm.h: cuBLAS (cublasGemmEx_64) with a per-(device, stream) handle,
// workspace and bf16 scratch. The precision setting, the argument checks and the CPU/CUDA
// dispatch are in gemm_dispatch.cpp (built without CUDA too). See gemm.h.
#include "runtime/gemm.h"

#include <map>
#include <mutex>
#include <utility>

#include "runtime/cuda_check.h"
#include "runtime/cuda_memory.h"
#include "runtime/stream.h"

namespace elmo {

namespace {

// cuBLAS's recommended workspace for Hopper; with a user workspace per handle, kernels of
// different streams never share scratch.
constexpr size_t kWorkspaceBytes = size_t{32} << 20;

struct GemmEntry {
  std::mutex mutex;  // one call at a time per handle (threads sharing a stream share it)
  cublasHandle_t handle = nullptr;
  void* workspace = nullptr;
  void* scratch = nullptr;  // bf16 copies of A and B
  size_t scratch_bytes = 0;
};

// Entries are never destroyed at exit (the driver may be gone by then); release_gemm_stream
// frees one when its stream goes away.
std::mutex& registry_mutex() {
  static auto* mutex = new std::mutex;
  return *mutex;
}
std::map<std::pair<int, cudaStream_t>, GemmEntry*>& registry() {
  static auto* map = new std::map<std::pair<int, cudaStream_t>, GemmEntry*>;
  return *map;
}

[[noreturn]] void throw_cublas(const char* call, cublasStatus_t status, int device,
                               GemmPrecision precision, const std::string& what) {
  std::string where = str("cuda:", device);
  if (!error_context().empty()) where += str(" [", error_context(), "]");
  throw Error(str(call, " failed with ", cublas_status_name(status), " on ", where, " for ", what,
                  ", precision ", gemm_precision_name(precision)));
}

GemmEntry& entry_for(int device, cudaStream_t stream) {
  GemmEntry* entry = nullptr;
  {
    std::lock_guard<std::mutex> lock(registry_mutex());
    GemmEntry*& slot = registry()[{device, stream}];
    if (slot == nullptr) slot = new GemmEntry;
    entry = slot;
  }
  std::lock_guard<std::mutex> lock(entry->mutex);
  if (entry->handle == nullptr) {
    ELMO_CUDA_CHECK(cudaSetDevice(device));
    cublasHandle_t handle = nullptr;
    cublasStatus_t status = cublasCreate(&handle);
    if (status != CUBLAS_STATUS_SUCCESS)
      throw_cublas("cublasCreate", status, device, gemm_precision(), "a new cuBLAS handle");
    entry->workspace = cuda_allocate(kWorkspaceBytes, device);
    ELMO_CUBLAS_CHECK(cublasSetStream(handle, stream));
    // After cublasSetStream: setting the stream resets the workspace to cuBLAS's own pool.
    ELMO_CUBLAS_CHECK(cublasSetWorkspace(handle, entry->workspace, kWorkspaceBytes));
    ELMO_CUBLAS_CHECK(cublasSetMathMode(handle, CUBLAS_DEFAULT_MATH));
    entry->handle = handle;
  }
  return *entry;
}

}  // namespace

void gemm_cuda(int device, GemmPrecision precision, bool trans_a, bool trans_b, int64_t m,
               int64_t n, int64_t k, float alpha, const float* a, int64_t lda, const float* b,
               int64_t ldb, float beta, float* c, int64_t ldc, const uint16_t* b_bf16) {
  check_gemm_args("gemm", trans_a, trans_b, m, n, k, lda, ldb, ldc);
  if (m == 0 || n == 0) return;
  cudaStream_t stream = current_stream();
  GemmEntry& entry = entry_for(device, stream);
  std::lock_guard<std::mutex> lock(entry.mutex);
  ELMO_CUDA_CHECK(cudaSetDevice(device));

  const void* a_ptr = a;
  const void* b_ptr = b;
  int64_t lda_used = lda, ldb_used = ldb;
  cudaDataType_t in_type = CUDA_R_32F;
  cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
  if (precision == GemmPrecision::kTf32) compute = CUBLAS_COMPUTE_32F_FAST_TF32;
  if (precision == GemmPrecision::kBf16 && k > 0) {
    // Packed bf16 copies of A and B as stored: A [a_rows, a_cols], B [b_rows, b_cols] (B only
    // when the caller has no copy of its own).
    const int64_t a_rows = trans_a ? k : m, a_cols = trans_a ? m : k;
    const int64_t b_rows = trans_b ? n : k, b_cols = trans_b ? k : n;
    const size_t a_bytes = static_cast<size_t>(a_rows * a_cols) * 2;
    const size_t b_offset = (a_bytes + 255) / 256 * 256;
    const size_t needed =
        b_bf16 != nullptr ? a_bytes : b_offset + static_cast<size_t>(b_rows * b_cols) * 2;
    if (entry.scratch_bytes < needed) {
      // Stream-ordered: GEMMs still reading the old scratch on this stream run first.
      if (entry.scratch != nullptr) cuda_release(entry.scratch, device);
      entry.scratch = nullptr;
      entry.scratch_bytes = 0;
      entry.scratch = cuda_allocate(needed + needed / 4, device);
      entry.scratch_bytes = needed + needed / 4;
    }
    char* scratch = static_cast<char*>(entry.scratch);
    convert_to_bf16_cuda(a, a_rows, a_cols, lda, scratch);
    if (b_bf16 == nullptr) convert_to_bf16_cuda(b, b_rows, b_cols, ldb, scratch + b_offset);
    a_ptr = scratch;
    b_ptr = b_bf16 != nullptr ? static_cast<const void*>(b_bf16) : scratch + b_offset;
    lda_used = a_cols;
    ldb_used = b_cols;
    in_type = CUDA_R_16BF;
  }
  // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the operands.
  const cublasStatus_t status = cublasGemmEx_64(
      entry.handle, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, n,
      m, k, &alpha, b_ptr, in_type, ldb_used, a_ptr, in_type, lda_used, &beta, c, CUDA_R_32F, ldc,
      compute, CUBLAS_GEMM_DEFAULT);
  if (status != CUBLAS_STATUS_SUCCESS)
    throw_cublas("cublasGemmEx_64", status, device, precision,
                 gemm_shape_text(trans_a, trans_b, m, n, k, lda, ldb, ldc));
}

void release_gemm_stream(int device, cudaStream_t stream) noexcept {
  GemmEntry* entry = nullptr;
  {
    std::lock_guard<std::mutex> lock(registry_mutex());
    auto it = registry().find({device, stream});
    if (it == registry().end()) return;
    entry = it->second;
    registry().erase(it);
  }
  (void)cudaSetDevice(device);
  (void)cudaStreamSynchronize(stream);
  try {
    if (entry->handle != nullptr) (void)cublasDestroy(entry->handle);
    if (entry->workspace != nullptr) cuda_release(entry->workspace, device);
    if (entry->scratch != nullptr) cuda_release(entry->scratch, device);
  } catch (...) {
    // Freeing failed (device already in an error state): the memory goes with the process.
  }
  delete entry;
}

}  // namespace elmo
