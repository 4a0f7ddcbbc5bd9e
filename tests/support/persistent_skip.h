// Skip of the persistent-LSTMP GPU tests on a GPU that cannot run a shape: the kernels need one
// block per SM and their weights in shared memory, so some shapes fit an H100 SXM (132 SMs) but
// not an H100 PCIe (114 SMs). Such a case skips with lstmp_persistent_supported's reason
// instead of failing; the shapes a GPU can run are still checked in full.
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "kernels/lstmp_persistent.h"

#define ELMO_SKIP_UNLESS_PERSISTENT_RUNS(C, P)                                             \
  do {                                                                                     \
    const std::string elmo_why_ = ::elmo::lstmp_persistent_supported((C), (P), 0);         \
    if (!elmo_why_.empty())                                                                \
      GTEST_SKIP() << "the persistent LSTMP kernels cannot run C " << (C) << ", P " << (P) \
                   << " on this GPU: " << elmo_why_;                                       \
  } while (0)
