// A CPU-only build (-DELMO_CUDA=OFF, or configured without a CUDA toolkit) refuses every request
// for a GPU with a usage error that says how to get the GPU build: the trainer's device and
// precision (exit code 2, before any work), the runtime's device memory, streams, uploads and
// GEMMs, a kernel entry point on a CUDA device, and the NCCL all-reduce. Skipped in CUDA builds
// (CI runs these in its CPU-only tree).
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "comm/dense_allreduce.h"
#include "comm/kv_store.h"
#include "kernels/adagrad.h"
#include "runtime/cuda_memory.h"
#include "runtime/gemm.h"
#include "runtime/pinned.h"
#include "runtime/stream.h"
#include "runtime/tensor.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

namespace fs = std::filesystem;
using testing::run_elmo;

#define SKIP_IN_CUDA_BUILDS()                                                            \
  do {                                                                                   \
    if (cuda_compiled_in()) GTEST_SKIP() << "a CUDA build: nothing is refused for that"; \
  } while (0)

constexpr const char* kRebuild = "install the CUDA toolkit (nvcc, cuBLAS, NCCL) and rebuild";

// A model that trains its one step in well under a second.
std::string config_in(const std::string& dir) {
  return testing::write_text_file(
      dir, "run.toml",
      "[run]\ndir = \"" + dir +
          "/run\"\n"
          "[synthetic]\nvocab_size = 150\nclasses = 4\ntrain_sentences = 300\nvalid_sentences = "
          "20\n"
          "[model]\nembedding_dim = 8\ncell_size = 16\nprojection_dim = 8\nlayers = 1\n"
          "[softmax]\nsamples = 20\n"
          "[train]\nbatch_size = 4\nunroll_steps = 5\nmax_steps = 1\nthreads = 1\n"
          "[eval]\nbatch_size = 2\n");
}

TEST(CpuOnlyBuild, TrainRefusesAGpuDeviceOrPrecisionNamingTheFix) {
  SKIP_IN_CUDA_BUILDS();
  const std::string dir = testing::temp_dir("cpu_only");
  const std::string config = config_in(dir);
  struct Case {
    std::string args, names;
  };
  for (const Case& c : std::vector<Case>{
           {"--device cuda", "--device cuda asks for a GPU"},
           {"--device cuda:1", "--device cuda:1 asks for a GPU"},
           {"--set train.device=cuda", "train.device = \"cuda\" asks for a GPU"},
           {"--set train.device=cuda:0 --device auto --set train.precision=bf16",
            "train.precision = \"bf16\" selects a GPU GEMM mode"},
           {"--set train.precision=tf32", "train.precision = \"tf32\" selects a GPU GEMM mode"}}) {
    const auto r = run_elmo("train --config " + config + " " + c.args);
    EXPECT_EQ(r.status, 2) << c.args << ": " << r.output;
    EXPECT_NE(r.output.find(c.names), std::string::npos) << c.args << ": " << r.output;
    EXPECT_NE(r.output.find("this elmo_fast was built without CUDA"), std::string::npos)
        << r.output;
    EXPECT_NE(r.output.find(kRebuild), std::string::npos) << r.output;
    EXPECT_FALSE(fs::exists(dir + "/run")) << "refused before any work: " << c.args;
  }
  // plan picks its device the way training does: the same refusal, naming the fix.
  const auto plan = run_elmo("plan --config " + config + " --device cuda --no-probe");
  EXPECT_EQ(plan.status, 2) << plan.output;
  EXPECT_NE(plan.output.find("this elmo_fast was built without CUDA"), std::string::npos)
      << plan.output;
  EXPECT_NE(plan.output.find(kRebuild), std::string::npos) << plan.output;
  // The CPU in fp32 is what this build does.
  const auto r = run_elmo("train --config " + config + " --set train.device=auto");
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("device: cpu"), std::string::npos) << r.output;
}

TEST(CpuOnlyBuild, RuntimeKernelsAndNcclRefuseCuda) {
  SKIP_IN_CUDA_BUILDS();
  EXPECT_EQ(cuda_device_count(), 0);
  EXPECT_EQ(cuda_unavailable_reason(), kCpuOnlyBuildMessage);
  const auto usage_error = [](const std::function<void()>& f) -> std::string {
    try {
      f();
    } catch (const UsageError& e) {
      return e.what();
    } catch (const std::exception& e) {
      return std::string("not a UsageError: ") + e.what();
    }
    return "no error";
  };
  for (const std::string& message : {
           usage_error([] { Tensor::empty({4}, DType::kF32, Device::cuda(0)); }),
           usage_error([] { CudaStream stream(0); }),
           usage_error([] { CudaEvent event(0); }),
           usage_error([] {
             int x = 0;
             upload_to_device(0, &x, &x, sizeof x);
           }),
           usage_error([] {
             float a = 1.0f, c = 0.0f;
             gemm(Device::cuda(0), false, false, 1, 1, 1, 1.0f, &a, 1, &a, 1, 0.0f, &c, 1);
           }),
           usage_error([] {
             float p = 1.0f, acc = 1.0f, g = 1.0f;
             adagrad_dense(Device::cuda(0), &p, &acc, &g, 1, 0.1f, 1e-7f, 1.0f);
           }),
           usage_error([] { cuda_set_device(0); }),
       }) {
    EXPECT_NE(message.find("this elmo_fast was built without CUDA"), std::string::npos) << message;
    EXPECT_NE(message.find(kRebuild), std::string::npos) << message;
  }
  EXPECT_NE(usage_error([] {
              Tensor::empty({4}, DType::kF32, Device::cuda(0));
            }).find("cuda:0 requested but 0 GPU(s) are visible"),
            std::string::npos);
  EXPECT_NE(usage_error([] {
              float p = 1.0f, acc = 1.0f, g = 1.0f;
              adagrad_dense(Device::cuda(0), &p, &acc, &g, 1, 0.1f, 1e-7f, 1.0f);
            }).find("adagrad_dense on CUDA"),
            std::string::npos);

  // NCCL: refused like an NCCL that cannot start (CommError), with the same fix.
  class NoStore : public KvStore {
   public:
    void set(const std::string&, const std::string&) override { ADD_FAILURE() << "set"; }
    std::string get(const std::string&, double) override {
      ADD_FAILURE() << "get";
      return "";
    }
  } store;
  try {
    make_nccl_allreduce(store, Topology{}, 0, 1);
    ADD_FAILURE() << "no error";
  } catch (const CommError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("NCCL all-reduce"), std::string::npos) << what;
    EXPECT_NE(what.find("this elmo_fast was built without CUDA"), std::string::npos) << what;
    EXPECT_NE(what.find(kRebuild), std::string::npos) << what;
  }
}

}  // namespace
}  // namespace elmo
