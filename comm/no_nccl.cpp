// The NCCL all-reduce in a CPU-only build (-DELMO_CUDA=OFF, or configured where no CUDA toolkit
// was found): built instead of nccl_allreduce.cpp, so nothing links NCCL. Its factory refuses
// (a CommError, as when NCCL cannot start) and says how to get the GPU build. GPU ranks never
// get here: such a binary sees no GPU, so every rank trains on the CPU with Gloo.
#include "comm/dense_allreduce.h"
#include "comm/kv_store.h"
#include "runtime/cuda_memory.h"

namespace elmo {

std::unique_ptr<DenseAllreduce> make_nccl_allreduce(KvStore&, const Topology&, int device, double,
                                                    const std::string& name) {
  throw CommError(str("NCCL all-reduce \"", name, "\" asks for device ", device, " (cuda:", device,
                      "), but ", kCpuOnlyBuildMessage));
}

}  // namespace elmo
