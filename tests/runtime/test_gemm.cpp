// GEMM entry point on the CPU: it is cpu_gemm bit for bit, its argument check names the shapes,
// and the precision setting parses, prints and scopes per thread (it does not touch the CPU).
#include "runtime/gemm.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "runtime/cpu_blas.h"
#include "runtime/rng.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

TEST(Gemm, CpuIsCpuGemmBitForBit) {
  Rng rng(4, 2);
  const int64_t m = 37, n = 29, k = 41;
  for (const bool ta : {false, true})
    for (const bool tb : {false, true}) {
      const int64_t lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 1, ldc = n + 2;
      std::vector<float> a((ta ? k : m) * lda), b((tb ? n : k) * ldb), c(m * ldc);
      for (float& x : a) x = rng.uniform() - 0.5f;
      for (float& x : b) x = rng.uniform() - 0.5f;
      for (float& x : c) x = rng.uniform();
      std::vector<float> expected = c;
      cpu_gemm(ta, tb, m, n, k, 0.5f, a.data(), lda, b.data(), ldb, 0.75f, expected.data(), ldc);
      {
        GemmPrecisionGuard bf16(GemmPrecision::kBf16);  // ignored on the CPU
        gemm(Device::cpu(), ta, tb, m, n, k, 0.5f, a.data(), lda, b.data(), ldb, 0.75f, c.data(),
             ldc);
      }
      EXPECT_EQ(c, expected) << "trans_a " << ta << " trans_b " << tb;
    }
}

TEST(Gemm, BadStridesAreErrorsNamingTheShapes) {
  std::vector<float> a(64), b(64), c(64);
  const std::string message = testing::error_of([&] {
    gemm(Device::cpu(), false, true, 4, 5, 6, 1.0f, a.data(), 5, b.data(), 6, 0.0f, c.data(), 5);
  });
  EXPECT_NE(message.find("C[4, 5] = op(A)[4, 6] @ op(B)[6, 5]"), std::string::npos) << message;
  EXPECT_NE(message.find("lda 5"), std::string::npos) << message;
  EXPECT_NE(message.find("trans_b yes"), std::string::npos) << message;
  EXPECT_THROW(check_gemm_args("x", false, false, 2, 3, 4, 4, 3, 2), Error);  // ldc < n
  EXPECT_NO_THROW(check_gemm_args("x", true, true, 2, 3, 4, 2, 4, 3));
}

TEST(Gemm, PrecisionNamesParseAndScopePerThread) {
  for (const GemmPrecision p : {GemmPrecision::kFp32, GemmPrecision::kTf32, GemmPrecision::kBf16})
    EXPECT_EQ(parse_gemm_precision(gemm_precision_name(p)), p);
  const std::string message = testing::error_of([] { parse_gemm_precision("fp16"); });
  EXPECT_NE(message.find("\"tf32\""), std::string::npos) << message;
  EXPECT_THROW(parse_gemm_precision("fp16"), UsageError);
  EXPECT_EQ(gemm_precision(), GemmPrecision::kFp32);
  {
    GemmPrecisionGuard guard(GemmPrecision::kTf32);
    EXPECT_EQ(gemm_precision(), GemmPrecision::kTf32);
    GemmPrecision other = GemmPrecision::kBf16;
    std::thread([&] { other = gemm_precision(); }).join();
    EXPECT_EQ(other, GemmPrecision::kFp32);
  }
  EXPECT_EQ(gemm_precision(), GemmPrecision::kFp32);
}

// Only a CUDA GEMM at kBf16 reads bf16 operands: the layers make bf16 weight copies only then,
// so fp32, tf32 and the CPU allocate and convert nothing. (No GPU is touched: the decision is
// the device kind and the thread's precision.)
TEST(Gemm, OnlyCudaBf16GemmsWantBf16Copies) {
  for (const GemmPrecision p : {GemmPrecision::kFp32, GemmPrecision::kTf32, GemmPrecision::kBf16}) {
    GemmPrecisionGuard guard(p);
    EXPECT_FALSE(gemm_uses_bf16(Device::cpu())) << gemm_precision_name(p);
    EXPECT_EQ(gemm_uses_bf16(Device::cuda(0)), p == GemmPrecision::kBf16) << gemm_precision_name(p);
  }
  EXPECT_THROW(convert_to_bf16(Device::cpu(), nullptr, 0, nullptr), Error);
}

// The CPU computes in f32 whatever the copy says: gemm_with_bf16_b ignores b_bf16 there (a copy
// holding other values changes nothing).
TEST(Gemm, CpuIgnoresTheBf16CopyOfB) {
  Rng rng(6, 2);
  const int64_t m = 9, n = 13, k = 17;
  for (const bool tb : {false, true}) {
    std::vector<float> a(m * k), b(k * n), c(m * n, 0.25f);
    for (float& x : a) x = rng.uniform() - 0.5f;
    for (float& x : b) x = rng.uniform() - 0.5f;
    const std::vector<uint16_t> wrong_copy(k * n, 0x3f80);  // bf16 1.0 everywhere
    std::vector<float> expected = c;
    cpu_gemm(false, tb, m, n, k, 1.0f, a.data(), k, b.data(), tb ? k : n, 0.5f, expected.data(), n);
    GemmPrecisionGuard bf16(GemmPrecision::kBf16);
    gemm_with_bf16_b(Device::cpu(), false, tb, m, n, k, 1.0f, a.data(), k, b.data(),
                     wrong_copy.data(), tb ? k : n, 0.5f, c.data(), n);
    EXPECT_EQ(c, expected) << "trans_b " << tb;
  }
}

}  // namespace
}  // namespace elmo
