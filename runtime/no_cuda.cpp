// The CUDA side of the runtime in a CPU-only build (-DELMO_CUDA=OFF, or configured where no CUDA
// toolkit was found): it replaces cuda_memory.cpp, stream.cpp, pinned.cpp, gemm.cpp and
// gemm_bf16.cu (cuda_memory_policy.cpp and gemm_dispatch.cpp are built in both), links no CUDA
// library, and keeps the same declarations, so no other file needs to know which build it is in.
// No GPU is ever visible (cuda_device_count() is 0), so a CUDA tensor, stream or GEMM can only be
// asked for by name: each such request is a UsageError that says how to get the GPU build
// (kCpuOnlyBuildMessage). What stays: the per-thread current stream (a plain value,
// runtime/stream.h) and releases of what can never have been allocated.
#include "runtime/cuda_memory.h"
#include "runtime/error.h"
#include "runtime/gemm.h"
#include "runtime/pinned.h"
#include "runtime/stream.h"

namespace elmo {

void throw_cpu_only_build(const char* what) {
  throw UsageError(str(what, ": ", kCpuOnlyBuildMessage));
}

// ---- cuda_memory.h ------------------------------------------------------------------------
bool cuda_compiled_in() { return false; }
int cuda_device_count() { return 0; }
std::string cuda_unavailable_reason() { return kCpuOnlyBuildMessage; }
std::string cuda_device_name(int index) { throw_cpu_only_build(str("cuda:", index).c_str()); }
void* cuda_allocate(size_t, int device) {
  throw_cpu_only_build(str("cuda:", device, " requested but 0 GPU(s) are visible").c_str());
}
void cuda_release(void*, int) {}  // nothing was ever allocated
bool cuda_uses_pool(int device) { throw_cpu_only_build(str("cuda:", device).c_str()); }
void cuda_fall_back_to_plain_allocation(int device, const std::string&) {
  throw_cpu_only_build(str("cuda:", device).c_str());
}
void cuda_copy(void*, Device, const void*, Device, size_t) { throw_cpu_only_build("a CUDA copy"); }
void cuda_zero(void*, int, size_t) { throw_cpu_only_build("a CUDA memset"); }
void cuda_synchronize(int device) { throw_cpu_only_build(str("cuda:", device).c_str()); }
void cuda_memory_info(int device, size_t*, size_t*) {
  throw_cpu_only_build(str("cuda:", device, " memory info").c_str());
}
void cuda_set_device(int device) { throw_cpu_only_build(str("cuda:", device).c_str()); }
size_t cuda_peak_bytes(int device) { throw_cpu_only_build(str("cuda:", device).c_str()); }

// ---- stream.h -----------------------------------------------------------------------------
namespace {
thread_local CudaStreamHandle g_current_stream = nullptr;
}  // namespace

CudaStreamHandle current_stream() { return g_current_stream; }
void set_current_stream(CudaStreamHandle stream) { g_current_stream = stream; }

CudaStream::CudaStream(int device) : device_(device) {
  throw_cpu_only_build(str("a stream on cuda:", device).c_str());
}
CudaStream::~CudaStream() = default;

CudaEvent::CudaEvent(int device) { throw_cpu_only_build(str("an event on cuda:", device).c_str()); }
CudaEvent::~CudaEvent() = default;
void CudaEvent::record(CudaStreamHandle) { throw_cpu_only_build("a CUDA event"); }
void CudaEvent::wait(CudaStreamHandle) const { throw_cpu_only_build("a CUDA event"); }
void CudaEvent::synchronize() const { throw_cpu_only_build("a CUDA event"); }

void release_stream_resources(int, CudaStreamHandle) noexcept {}

// ---- pinned.h -----------------------------------------------------------------------------
void upload_to_device(int device, void*, const void*, size_t) {
  throw_cpu_only_build(str("an upload to cuda:", device).c_str());
}

// ---- gemm.h (the CUDA half; gemm_dispatch.cpp is built in both) --------------------------
void gemm_cuda(int device, GemmPrecision, bool, bool, int64_t, int64_t, int64_t, float,
               const float*, int64_t, const float*, int64_t, float, float*, int64_t,
               const uint16_t*) {
  throw_cpu_only_build(str("a GEMM on cuda:", device).c_str());
}
void convert_to_bf16_cuda(const float*, int64_t, int64_t, int64_t, void*) {
  throw_cpu_only_build("a bf16 conversion on CUDA");
}

}  // namespace elmo
