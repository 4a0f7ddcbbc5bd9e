// bench_lstmp's decisions on the CPU (bench/bench_lstmp_cases.h): a cuDNN refusal is recognised
// by its status category, cuDNN 9 sub-codes included, so the bf16 case falls back to half data
// instead of failing; real failures are not mistaken for refusals; and `--kernel persistent`
// skips the default shapes its kernels cannot run (the ptb set has no projection) rather than
// exiting 2, with a reason, on an H100 SXM (132 SMs) and an H100 PCIe (114 SMs).
#include <gtest/gtest.h>

#include "bench/bench_lstmp_cases.h"
#include "kernels/lstmp_persistent.h"

namespace elmo::bench {
namespace {

TEST(BenchLstmp, CudnnRefusalsAreRecognisedByCategory) {
  for (const cudnnStatus_t s : {CUDNN_STATUS_NOT_SUPPORTED, CUDNN_STATUS_BAD_PARAM})
    EXPECT_TRUE(cudnn_refused(s)) << static_cast<int>(s);
#ifdef CUDNN_STATUS_CATEGORY
  // cuDNN 9 sub-codes: what cudnnSetRNNDescriptor_v8 and friends return for bf16 RNNs.
  for (const cudnnStatus_t s :
       {CUDNN_STATUS_NOT_SUPPORTED_DATA_TYPE, CUDNN_STATUS_NOT_SUPPORTED_SHAPE,
        CUDNN_STATUS_NOT_SUPPORTED_LAYOUT, CUDNN_STATUS_NOT_SUPPORTED_ARCH_MISMATCH,
        CUDNN_STATUS_BAD_PARAM_NULL_POINTER, CUDNN_STATUS_BAD_PARAM_OUT_OF_BOUND,
        CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH})
    EXPECT_TRUE(cudnn_refused(s)) << static_cast<int>(s);
  for (const cudnnStatus_t s :
       {CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED, CUDNN_STATUS_EXECUTION_FAILED_CUBLAS,
        CUDNN_STATUS_NOT_INITIALIZED, CUDNN_STATUS_SUBLIBRARY_LOADING_FAILED})
    EXPECT_FALSE(cudnn_refused(s)) << static_cast<int>(s);
#endif
  for (const cudnnStatus_t s :
       {CUDNN_STATUS_SUCCESS, CUDNN_STATUS_INTERNAL_ERROR, CUDNN_STATUS_EXECUTION_FAILED})
    EXPECT_FALSE(cudnn_refused(s)) << static_cast<int>(s);
}

// What lstmp_persistent_supported answers on a device, minus the occupancy check: the plan.
std::function<std::string(int64_t, int64_t)> planned_on(const LstmpDeviceLimits& limits) {
  return [limits](int64_t C, int64_t P) { return lstmp_persistent_plan(C, P, limits).reason; };
}

TEST(BenchLstmp, PersistentKernelSkipsTheDefaultShapesItCannotRun) {
  const std::vector<LayerShape> shapes = shapes_for({"elmo", "ptb"}, false);
  ASSERT_EQ(shapes.size(), 5u);
  const LstmpDeviceLimits sxm = lstmp_persistent_h100_limits();
  LstmpDeviceLimits pcie = sxm;
  pcie.sm_count = 114;
  int runnable_on_sxm = 0;
  for (const LayerShape& s : shapes) {
    const std::string on_sxm = persistent_skip_reason(s, planned_on(sxm));
    const std::string on_pcie = persistent_skip_reason(s, planned_on(pcie));
    if (s.P == 0) {
      EXPECT_NE(on_sxm.find("projection"), std::string::npos) << s.name << ": " << on_sxm;
      EXPECT_NE(on_sxm.find(s.name), std::string::npos) << on_sxm;
      EXPECT_FALSE(on_pcie.empty()) << s.name;
    } else {
      EXPECT_EQ(on_sxm, "") << s.name;
      runnable_on_sxm += on_sxm.empty();
      // C = 4096, P = 512 needs 64 units per block on 114 SMs: too much shared memory.
      EXPECT_FALSE(on_pcie.empty()) << s.name;
    }
  }
  EXPECT_EQ(runnable_on_sxm, 2);  // the elmo shapes: the default run measures something
  const std::vector<LayerShape> quick = shapes_for({"elmo", "ptb"}, true);
  EXPECT_EQ(persistent_skip_reason(quick[0], planned_on(pcie)), "") << quick[0].name;
  EXPECT_FALSE(persistent_skip_reason(quick[1], planned_on(sxm)).empty()) << quick[1].name;
}

TEST(BenchLstmp, UnknownShapeSetIsAUsageError) {
  EXPECT_THROW(shapes_for({"elmo", "wiki"}, false), UsageError);
}

}  // namespace
}  // namespace elmo::bench
