// cuBLAS GEMM against a double-precision reference, every transpose pair with padded strides,
// alpha/beta and k = 0, in each precision mode with a bound derived from the mode's rounding:
//   |C - C_ref| <= (input rounding + K * 2^-24) * sum_k |alpha a_ik b_kj| + 2^-24 |beta c_ij|
// which holds for any summation order (blocked, split-K, FMA; +2 u for alpha and the final
// rounding): fp32 has no input rounding; TF32 keeps a 10-bit mantissa (a product is off by
// <= 2^-9 relative even if the tensor cores truncate instead of rounding); bf16 (our kernel
// rounds to nearest, 8-bit precision) by <= 2^-7. The lower modes must also really be used: their
// results leave the fp32 bound somewhere. Plus: a bad stride names the shapes; handles are per
// stream.
//
// Strides. The padded, odd strides (lda = k + 3, ...) check the bounds and the untouched
// padding in every mode. But CUBLAS_COMPUTE_32F_FAST_TF32 only *allows* TF32: cuBLAS runs its
// tensor-core kernels when the operands meet their alignment (cuBLAS's "Tensor Core Usage":
// leading dimensions, the dimensions they stride over and the pointers 16-byte multiples, i.e.
// multiples of 4 floats) and may otherwise take an fp32 kernel, whose results are all within
// the fp32 bound. So "TF32 was really applied" is asked only of cases whose m, n, k and strides
// are multiples of 4 (pointers from the pool are 256-byte aligned). bf16 needs no such care:
// our kernel rounds the operands before cuBLAS sees them.
#include "runtime/gemm.h"

#include <gtest/gtest.h>

#include <cmath>
#include <tuple>
#include <vector>

#include "kernels/pointwise.h"
#include "runtime/rng.h"
#include "runtime/stream.h"
#include "runtime/tensor.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

struct Case {
  int64_t m, n, k;
  bool ta, tb;
  bool aligned = false;  // strides padded by 4 (16 bytes) instead of 3 / 2 / 1
};

double input_rounding(GemmPrecision p) {
  switch (p) {
    case GemmPrecision::kFp32: return 0.0;
    case GemmPrecision::kTf32: return std::ldexp(1.0, -9);
    case GemmPrecision::kBf16: return std::ldexp(1.0, -7);
  }
  return 1.0;
}

// Runs one case on cuda:0 with `precision`; returns the number of elements outside the fp32
// bound (to show that a lower precision was really applied) and checks the mode's own bound.
int64_t run_case(const Case& cs, GemmPrecision precision, uint64_t seed) {
  const auto [m, n, k, ta, tb, aligned] = cs;
  const int64_t lda = (ta ? m : k) + (aligned ? 4 : 3), ldb = (tb ? k : n) + (aligned ? 4 : 2);
  const int64_t ldc = n + (aligned ? 4 : 1);
  const float alpha = 0.75f, beta = 0.5f;
  Rng rng(seed, 7);
  std::vector<float> a((ta ? k : m) * lda), b((tb ? n : k) * ldb), c(m * ldc);
  for (float& x : a) x = 2.0f * rng.uniform() - 1.0f;
  for (float& x : b) x = 2.0f * rng.uniform() - 1.0f;
  for (float& x : c) x = 2.0f * rng.uniform() - 1.0f;
  const Device dev = Device::cuda(0);
  Tensor da = Tensor::from_floats(a, {static_cast<int64_t>(a.size())}).to(dev);
  Tensor db = Tensor::from_floats(b, {static_cast<int64_t>(b.size())}).to(dev);
  Tensor dc = Tensor::from_floats(c, {static_cast<int64_t>(c.size())}).to(dev);
  {
    GemmPrecisionGuard guard(precision);
    gemm(dev, ta, tb, m, n, k, alpha, da.data<float>(), lda, db.data<float>(), ldb, beta,
         dc.data<float>(), ldc);
  }
  const std::vector<float> got = dc.to_floats();
  const double u = std::ldexp(1.0, -24);
  int64_t outside_fp32 = 0;
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double ref = beta * static_cast<double>(c[i * ldc + j]), mag = 0.0;
      for (int64_t q = 0; q < k; ++q) {
        const double av = ta ? a[q * lda + i] : a[i * lda + q];
        const double bv = tb ? b[j * ldb + q] : b[q * ldb + j];
        ref += alpha * av * bv;
        mag += std::fabs(alpha * av * bv);
      }
      const double err = std::fabs(got[i * ldc + j] - ref);
      const double tail = u * std::fabs(beta * c[i * ldc + j]) + u * std::fabs(ref);
      const double bound = (input_rounding(precision) + (k + 2) * u) * mag + tail;
      EXPECT_LE(err, bound) << gemm_precision_name(precision) << " " << m << "x" << n << "x" << k
                            << " ta " << ta << " tb " << tb << " at (" << i << ", " << j << ")";
      if (err > (k + 2) * u * mag + tail) ++outside_fp32;
    }
  // The padding between rows of C is never written.
  for (int64_t i = 0; i < m; ++i) EXPECT_EQ(got[i * ldc + n], c[i * ldc + n]);
  return outside_fp32;
}

const std::vector<Case> kCases = {{37, 29, 61, false, false}, {37, 29, 61, false, true},
                                  {37, 29, 61, true, false},  {37, 29, 61, true, true},
                                  {128, 96, 512, false, true}, {5, 300, 2, true, false}};
// Every transpose pair with dimensions and strides that meet cuBLAS's tensor-core alignment.
const std::vector<Case> kAlignedCases = {{64, 32, 256, false, false, true},
                                         {64, 32, 256, false, true, true},
                                         {64, 32, 256, true, false, true},
                                         {128, 96, 512, true, true, true}};

TEST(GemmGpu, Fp32WithinTheSummationBound) {
  ELMO_SKIP_WITHOUT_GPU();
  for (const Case& cs : kCases) EXPECT_EQ(run_case(cs, GemmPrecision::kFp32, 1), 0);
  for (const Case& cs : kAlignedCases) EXPECT_EQ(run_case(cs, GemmPrecision::kFp32, 1), 0);
}

TEST(GemmGpu, Tf32WithinItsBoundAndReallyUsed) {
  ELMO_SKIP_WITHOUT_GPU();
  for (const Case& cs : kCases) run_case(cs, GemmPrecision::kTf32, 2);  // cuBLAS may pick fp32
  int64_t outside = 0;
  for (const Case& cs : kAlignedCases) outside += run_case(cs, GemmPrecision::kTf32, 2);
  EXPECT_GT(outside, 0) << "TF32 results of aligned operands all within the fp32 bound: was TF32 "
                           "applied?";
}

TEST(GemmGpu, Bf16WithinItsBoundAndReallyUsed) {
  ELMO_SKIP_WITHOUT_GPU();
  int64_t outside = 0;
  for (const Case& cs : kCases) outside += run_case(cs, GemmPrecision::kBf16, 3);
  EXPECT_GT(outside, 0) << "bf16 results all within the fp32 bound: was bf16 applied?";
}

TEST(GemmGpu, ZeroKScalesCByBeta) {
  ELMO_SKIP_WITHOUT_GPU();
  const Device dev = Device::cuda(0);
  Tensor a = Tensor::zeros({4}, DType::kF32, dev), b = Tensor::zeros({4}, DType::kF32, dev);
  Tensor c = Tensor::from_floats({1, 2, 3, 4, 5, 6}, {6}).to(dev);
  for (const GemmPrecision p : {GemmPrecision::kFp32, GemmPrecision::kBf16}) {
    GemmPrecisionGuard guard(p);
    gemm(dev, false, false, 2, 3, 0, 1.0f, a.data<float>(), 1, b.data<float>(), 3, 0.5f,
         c.data<float>(), 3);
  }
  EXPECT_EQ(c.to_floats(), (std::vector<float>{0.25f, 0.5f, 0.75f, 1.0f, 1.25f, 1.5f}));
}

TEST(GemmGpu, BadStrideNamesTheShapesOnTheDevice) {
  ELMO_SKIP_WITHOUT_GPU();
  const Device dev = Device::cuda(0);
  Tensor t = Tensor::zeros({64}, DType::kF32, dev);
  const std::string message = testing::error_of([&] {
    gemm(dev, true, false, 4, 5, 6, 1.0f, t.data<float>(), 3, t.data<float>(), 5, 0.0f,
         t.data<float>(), 5);
  });
  EXPECT_NE(message.find("C[4, 5] = op(A)[4, 6] @ op(B)[6, 5]"), std::string::npos) << message;
  EXPECT_NE(message.find("lda 3"), std::string::npos) << message;
}

TEST(GemmGpu, StreamsGetTheirOwnHandlesAndAgree) {
  ELMO_SKIP_WITHOUT_GPU();
  const Device dev = Device::cuda(0);
  const int64_t m = 64, n = 48, k = 80;
  Tensor a = testing::random_tensor({m, k}, 5).to(dev), b = testing::random_tensor({k, n}, 6).to(dev);
  Tensor c0 = Tensor::zeros({m, n}, DType::kF32, dev);
  gemm(dev, false, false, m, n, k, 1.0f, a.data<float>(), k, b.data<float>(), n, 0.0f,
       c0.data<float>(), n);
  std::vector<float> results[2];
  {
    CudaStream streams[2] = {CudaStream(0), CudaStream(0)};
    Tensor c[2];
    for (int s = 0; s < 2; ++s) {
      StreamGuard guard(streams[s].get());
      c[s] = Tensor::zeros({m, n}, DType::kF32, dev);
      gemm(dev, false, false, m, n, k, 1.0f, a.data<float>(), k, b.data<float>(), n, 0.0f,
           c[s].data<float>(), n);
      results[s] = c[s].to_floats();  // synchronises this stream
    }
  }
  // Same algorithm for the same problem on any stream: identical bits.
  EXPECT_EQ(results[0], c0.to_floats());
  EXPECT_EQ(results[1], c0.to_floats());
}

// A bf16 copy of B made once (convert_to_bf16, as the LSTM layer does for its weights) gives
// the bits of a kBf16 GEMM that converts B itself, for every transpose pair and padded strides
// (the copy is packed); fp32 and tf32 read the f32 B and ignore the copy.
TEST(GemmGpu, Bf16CopyOfBGivesTheSameBitsAndOnlyBf16ReadsIt) {
  ELMO_SKIP_WITHOUT_GPU();
  const Device dev = Device::cuda(0);
  const int64_t m = 37, n = 29, k = 61;
  for (const bool ta : {false, true})
    for (const bool tb : {false, true}) {
      const int64_t lda = (ta ? m : k) + 3, b_rows = tb ? n : k, b_cols = tb ? k : n;
      const int64_t ldb = b_cols + 2, ldc = n + 1;
      Tensor a = testing::random_tensor({(ta ? k : m) * lda}, 11).to(dev);
      Tensor b = testing::random_tensor({b_rows * ldb}, 12).to(dev);
      Tensor packed = testing::random_tensor({b_rows, b_cols}, 13);  // B without the padding
      {
        const Tensor host_b = b.to(Device::cpu());
        for (int64_t r = 0; r < b_rows; ++r)
          for (int64_t c = 0; c < b_cols; ++c)
            packed.data<float>()[r * b_cols + c] = host_b.data<float>()[r * ldb + c];
      }
      const Tensor packed_dev = packed.to(dev);
      Tensor copy = Tensor::empty({b_rows * b_cols}, DType::kBF16, dev);
      auto* copy16 = static_cast<uint16_t*>(copy.raw());
      convert_to_bf16(dev, packed_dev.data<float>(), b_rows * b_cols, copy16);
      Tensor wrong = Tensor::empty({b_rows * b_cols}, DType::kBF16, dev);
      Tensor ones = Tensor::zeros({b_rows * b_cols}, DType::kF32, dev);
      fill_floats(dev, ones.data<float>(), ones.numel(), 1.0f);
      convert_to_bf16(dev, ones.data<float>(), ones.numel(), static_cast<uint16_t*>(wrong.raw()));
      for (const GemmPrecision p :
           {GemmPrecision::kFp32, GemmPrecision::kTf32, GemmPrecision::kBf16}) {
        GemmPrecisionGuard guard(p);
        Tensor c_plain = Tensor::zeros({m * ldc}, DType::kF32, dev);
        Tensor c_copy = Tensor::zeros({m * ldc}, DType::kF32, dev);
        gemm(dev, ta, tb, m, n, k, 0.75f, a.data<float>(), lda, b.data<float>(), ldb, 0.0f,
             c_plain.data<float>(), ldc);
        const uint16_t* given =
            p == GemmPrecision::kBf16 ? copy16 : static_cast<const uint16_t*>(wrong.raw());
        gemm_with_bf16_b(dev, ta, tb, m, n, k, 0.75f, a.data<float>(), lda, b.data<float>(), given,
                         ldb, 0.0f, c_copy.data<float>(), ldc);
        EXPECT_EQ(c_copy.to_floats(), c_plain.to_floats())
            << gemm_precision_name(p) << " ta " << ta << " tb " << tb;
      }
    }
}

}  // namespace
}  // namespace elmo
