// Pointwise ops: CUDA against the CPU. Every op except sum_to_double computes each element by
// the same sequence of correctly rounded f32 (or f64) operations as the CPU (no contraction on
// the device, -ffp-contract=off on the host), so they must agree bit for bit; sum_to_double adds
// in a tree on the device and sequentially on the CPU (tolerance: 1e-12 relative, double sums
// of 10^5 terms of size ~1).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <utility>
#include <vector>

#include "kernels/pointwise.h"
#include "runtime/cuda_memory.h"
#include "runtime/rng.h"
#include "runtime/tensor.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

const Device kCpu = Device::cpu(), kGpu = Device::cuda(0);

std::vector<float> randoms(int64_t n, uint64_t seed) {
  Rng rng(seed, 3);
  std::vector<float> v(n);
  for (float& x : v) x = 4.0f * (rng.uniform() - 0.5f);
  return v;
}
Tensor gpu(const std::vector<float>& v) {
  return Tensor::from_floats(v, {static_cast<int64_t>(v.size())}).to(kGpu);
}

// The bf16 conversions (the bf16 all-reduce of GPU ranks) work on the bits on both backends:
// equal words, NaN and infinities included, and the widening back is exact.
TEST(PointwiseGpu, Bf16ConversionsMatchCpuBitForBit) {
  ELMO_SKIP_WITHOUT_GPU();
  std::vector<float> x = randoms(70001, 5);
  const float specials[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, 1e-40f, 3.0e38f, 1.00390625f};
  x.insert(x.end(), std::begin(specials), std::end(specials));
  const int64_t n = static_cast<int64_t>(x.size());
  std::vector<uint16_t> words(n);
  floats_to_bf16(kCpu, x.data(), words.data(), n);
  const Tensor gx = gpu(x);
  Tensor gwords = Tensor::empty({n}, DType::kBF16, kGpu);
  floats_to_bf16(kGpu, gx.data<float>(), static_cast<uint16_t*>(gwords.raw()), n);
  std::vector<uint16_t> back(n);
  cuda_copy(back.data(), kCpu, gwords.raw(), kGpu, sizeof(uint16_t) * n);
  EXPECT_EQ(back, words);

  std::vector<float> wide(n);
  bf16_to_floats(kCpu, words.data(), wide.data(), n);
  Tensor gwide = gpu(std::vector<float>(n, 0.0f));
  bf16_to_floats(kGpu, static_cast<const uint16_t*>(gwords.raw()), gwide.data<float>(), n);
  const std::vector<float> got = gwide.to_floats();
  EXPECT_EQ(std::memcmp(got.data(), wide.data(), sizeof(float) * n), 0);
}

TEST(PointwiseGpu, ElementwiseOpsMatchCpuBitForBit) {
  ELMO_SKIP_WITHOUT_GPU();
  const int64_t n = 100003;  // not a multiple of the block size
  const std::vector<float> a = randoms(n, 1), b = randoms(n, 2);
  Tensor ga = gpu(a), gb = gpu(b), gout = gpu(std::vector<float>(n, 0.0f));

  std::vector<float> out(n);
  add_floats(kCpu, a.data(), b.data(), out.data(), n);
  add_floats(kGpu, ga.data<float>(), gb.data<float>(), gout.data<float>(), n);
  EXPECT_EQ(gout.to_floats(), out);

  clip_values(kCpu, a.data(), out.data(), n, 1.25f);
  clip_values(kGpu, ga.data<float>(), gout.data<float>(), n, 1.25f);
  EXPECT_EQ(gout.to_floats(), out);

  std::vector<float> g = b;
  Tensor gg = gpu(b);
  mask_clip_grad(kCpu, g.data(), a.data(), n, 1.25f);
  mask_clip_grad(kGpu, gg.data<float>(), ga.data<float>(), n, 1.25f);
  EXPECT_EQ(gg.to_floats(), g);

  copy_floats(kGpu, gout.data<float>(), ga.data<float>(), n);
  EXPECT_EQ(gout.to_floats(), a);
  fill_floats(kGpu, gout.data<float>(), n, -3.5f);
  EXPECT_EQ(gout.to_floats(), std::vector<float>(n, -3.5f));

  const int64_t dim = 1023, rows = 97;
  const std::vector<float> row = randoms(dim, 3);
  std::vector<float> rows_out(dim * rows);
  Tensor grows = gpu(std::vector<float>(dim * rows, 0.0f));
  broadcast_rows(kCpu, row.data(), dim, rows, rows_out.data());
  broadcast_rows(kGpu, gpu(row).data<float>(), dim, rows, grows.data<float>());
  EXPECT_EQ(grows.to_floats(), rows_out);
}

// The f32 column sums: the CUDA kernel adds in lane order, the CPU in row order (pointwise.h),
// so they may differ by the rounding of either order: each order makes `rows` roundings, each
// off by at most 2^-24 times a partial sum of |start| + sum_r |x[r, j]|, so the two differ by at
// most 2 * rows * 2^-24 * (|start| + sum_r |x[r, j]|) per column, and no more.
void expect_f32_column_sums_close(const std::vector<float>& got, const std::vector<float>& cpu,
                                  const std::vector<float>& x, const std::vector<float>& start,
                                  int64_t rows, int64_t ld) {
  ASSERT_EQ(got.size(), cpu.size());
  int64_t differing = 0;
  for (size_t j = 0; j < cpu.size(); ++j) {
    double magnitude = std::fabs(static_cast<double>(start[j]));
    for (int64_t r = 0; r < rows; ++r) magnitude += std::fabs(static_cast<double>(x[r * ld + j]));
    const double bound = 2.0 * static_cast<double>(rows) * std::ldexp(1.0, -24) * magnitude;
    const double err = std::fabs(static_cast<double>(got[j]) - static_cast<double>(cpu[j]));
    EXPECT_LE(err, bound) << "column " << j << " of " << cpu.size() << ", " << rows << " rows";
    differing += got[j] != cpu[j];
  }
  if (differing > 0)
    std::printf("f32 column sums: %lld of %zu columns differ in the last bits (within bound)\n",
                static_cast<long long>(differing), cpu.size());
}

TEST(PointwiseGpu, ColumnSumsAndScaledRowsMatchCpu) {
  ELMO_SKIP_WITHOUT_GPU();
  const int64_t rows = 300, cols = 4100, ld = 4103;
  const std::vector<float> x = randoms(rows * ld, 4);
  std::vector<float> out = randoms(cols, 5);
  Tensor gx = gpu(x), gout = gpu(out);
  const std::vector<float> start = out;
  column_sums_add(kCpu, x.data(), rows, cols, ld, out.data());
  column_sums_add(kGpu, gx.data<float>(), rows, cols, ld, gout.data<float>());
  expect_f32_column_sums_close(gout.to_floats(), out, x, start, rows, ld);

  std::vector<double> out64(cols, 0.5);
  Tensor g64 = Tensor::empty({cols}, DType::kI64);
  std::memcpy(g64.raw(), out64.data(), cols * sizeof(double));
  g64 = g64.to(kGpu);
  column_sums_add_f64(kCpu, x.data(), rows, cols, ld, out64.data());
  column_sums_add_f64(kGpu, gx.data<float>(), rows, cols, ld,
                      reinterpret_cast<double*>(g64.data<int64_t>()));
  std::vector<double> got64(cols);
  const Tensor h64 = g64.to(kCpu);
  std::memcpy(got64.data(), h64.raw(), cols * sizeof(double));
  EXPECT_EQ(got64, out64);

  // The sampled-softmax bias shape (N = T * B = 2560 rows of S = 8192 samples) and fewer rows
  // than lanes: the same bits as the CPU twin, and from one run to the next.
  for (const auto& [big_rows, big_cols] :
       std::vector<std::pair<int64_t, int64_t>>{{2560, 8192}, {5, 100}}) {
    const std::vector<float> xb = randoms(big_rows * big_cols, 9);
    std::vector<double> sums(big_cols, -1.0);
    Tensor gsums = Tensor::empty({big_cols}, DType::kI64);
    std::memcpy(gsums.raw(), sums.data(), big_cols * sizeof(double));
    gsums = gsums.to(kGpu);
    const Tensor gxb = gpu(xb);
    column_sums_add_f64(kCpu, xb.data(), big_rows, big_cols, big_cols, sums.data());
    for (int run = 0; run < 2; ++run) {
      Tensor g = Tensor::empty({big_cols}, DType::kI64);
      std::memcpy(g.raw(), std::vector<double>(big_cols, -1.0).data(), big_cols * sizeof(double));
      g = g.to(kGpu);
      column_sums_add_f64(kGpu, gxb.data<float>(), big_rows, big_cols, big_cols,
                          reinterpret_cast<double*>(g.data<int64_t>()));
      std::vector<double> got(big_cols);
      const Tensor h = g.to(kCpu);
      std::memcpy(got.data(), h.raw(), big_cols * sizeof(double));
      EXPECT_EQ(got, sums) << big_rows << " x " << big_cols << ", run " << run;
    }
    std::vector<float> sums32(big_cols, 0.5f);
    const std::vector<float> start32 = sums32;
    Tensor g32 = gpu(sums32);
    column_sums_add(kCpu, xb.data(), big_rows, big_cols, big_cols, sums32.data());
    column_sums_add(kGpu, gxb.data<float>(), big_rows, big_cols, big_cols, g32.data<float>());
    const std::vector<float> first = g32.to_floats();
    expect_f32_column_sums_close(first, sums32, xb, start32, big_rows, big_cols);
    Tensor again = gpu(start32);
    column_sums_add(kGpu, gxb.data<float>(), big_rows, big_cols, big_cols, again.data<float>());
    EXPECT_EQ(again.to_floats(), first) << "f32 column sums differ from one run to the next";
  }

  const int64_t n = 513, dim = 257, vocab = 1000;
  const std::vector<float> table = randoms(vocab * dim, 6), scale = randoms(n, 7);
  std::vector<int32_t> ids(n);
  for (int64_t r = 0; r < n; ++r) ids[r] = static_cast<int32_t>((r * 37) % vocab);
  Tensor hids = Tensor::empty({n}, DType::kI32);
  std::memcpy(hids.raw(), ids.data(), n * sizeof(int32_t));
  std::vector<float> acc = randoms(n * dim, 8);
  Tensor gacc = gpu(acc);
  add_scaled_table_rows(kCpu, acc.data(), scale.data(), table.data(), ids.data(), n, dim);
  add_scaled_table_rows(kGpu, gacc.data<float>(), gpu(scale).data<float>(),
                        gpu(table).data<float>(), hids.to(kGpu).data<int32_t>(), n, dim);
  EXPECT_EQ(gacc.to_floats(), acc);
}

TEST(PointwiseGpu, SumToDoubleIsDeterministicAndClose) {
  ELMO_SKIP_WITHOUT_GPU();
  const int64_t n = 100000;
  const std::vector<float> x = randoms(n, 9);
  double cpu = 0.0;
  sum_to_double(kCpu, x.data(), n, &cpu);
  Tensor gx = gpu(x), out = Tensor::empty({1}, DType::kI64, kGpu);
  double first = 0.0;
  for (int rep = 0; rep < 3; ++rep) {
    sum_to_double(kGpu, gx.data<float>(), n, reinterpret_cast<double*>(out.data<int64_t>()));
    double got = 0.0;
    const Tensor host = out.to(kCpu);
    std::memcpy(&got, host.raw(), sizeof got);
    EXPECT_NEAR(got, cpu, 1e-12 * n);
    if (rep == 0) first = got;
    EXPECT_EQ(got, first);
  }
}

}  // namespace
}  // namespace elmo
