// bench_lstmp's case list and the two decisions it takes before measuring a case, kept apart
// from the CUDA/cuDNN code so that they are tested on the CPU (tests/bench/test_bench_lstmp.cpp):
//   shapes_for               the shape sets (--shapes elmo,ptb; --quick)
//   cudnn_refused            whether a failed cuDNN call means "this configuration is not
//                            supported" (the bf16 case then falls back to half data); by status
//                            category, since cuDNN 9 reports sub-codes (3003 =
//                            CUDNN_STATUS_NOT_SUPPORTED_DATA_TYPE, not 3000)
//   persistent_skip_reason   why --kernel persistent cannot run a shape ("" = it can)
// What it is not: the benchmark (bench_lstmp.cpp); nothing here touches a GPU.
#pragma once

#include <cudnn.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "runtime/error.h"

namespace elmo::bench {

struct LayerShape {
  std::string name;
  int64_t B, T, in, C, P;  // P = 0: no projection
  int64_t H() const { return P > 0 ? P : C; }
  double flops() const {
    return 3.0 * 2.0 * static_cast<double>(T * B) *
           (4.0 * C * (in + H()) + (P > 0 ? static_cast<double>(C) * P : 0.0));
  }
};

inline std::vector<LayerShape> shapes_for(const std::vector<std::string>& sets, bool quick) {
  std::vector<LayerShape> out;
  for (const std::string& set : sets) {
    if (set == "elmo") {
      if (quick)
        out.push_back({"elmo-quick", 16, 5, 64, 256, 64});
      else {
        out.push_back({"elmo", 128, 20, 512, 4096, 512});
        out.push_back({"elmo", 256, 20, 512, 4096, 512});
      }
    } else if (set == "ptb") {
      if (quick)
        out.push_back({"ptb-quick", 8, 6, 96, 96, 0});
      else {  // configs/ptb-{small,medium,large}.toml: batch 20, unroll 20 / 35 / 35
        out.push_back({"ptb-small", 20, 20, 200, 200, 0});
        out.push_back({"ptb-medium", 20, 35, 650, 650, 0});
        out.push_back({"ptb-large", 20, 35, 1500, 1500, 0});
      }
    } else {
      throw UsageError(str("--shapes: unknown set \"", set, "\"; use elmo and/or ptb"));
    }
  }
  return out;
}

// True when `status` says cuDNN does not support what it was asked (any sub-code of
// CUDNN_STATUS_NOT_SUPPORTED or CUDNN_STATUS_BAD_PARAM); false for success and real failures
// (internal errors, execution failures, a missing library), which must not be papered over.
inline bool cudnn_refused(cudnnStatus_t status) {
#ifdef CUDNN_STATUS_CATEGORY  // cuDNN 9: category * 1000 + specific error
  const int category = CUDNN_STATUS_CATEGORY(static_cast<int>(status));
#else
  const int category = static_cast<int>(status);
#endif
  return category == static_cast<int>(CUDNN_STATUS_NOT_SUPPORTED) ||
         category == static_cast<int>(CUDNN_STATUS_BAD_PARAM);
}

// Why the persistent kernels cannot run shape `s` ("" = they can). `supported(C, P)` answers
// for one (cell, projection) pair: lstmp_persistent_supported on the benchmark's device, or a
// plan for given limits in tests. Plain LSTMs (the ptb shapes) have no projection.
inline std::string persistent_skip_reason(
    const LayerShape& s, const std::function<std::string(int64_t, int64_t)>& supported) {
  const std::string why = supported(s.C, s.P);
  if (why.empty()) return "";
  return str("--kernel persistent cannot run ", s.name, " (C ", s.C, ", P ", s.P, "): ", why);
}

}  // namespace elmo::bench
