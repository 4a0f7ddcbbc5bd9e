// Pointwise ops on the CPU: each against its one-line definition (kernels/pointwise.h).
#include <gtest/gtest.h>

#include <cmath>
#include <utility>
#include <vector>

#include "kernels/pointwise.h"
#include "runtime/rng.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

std::vector<float> randoms(int64_t n, uint64_t seed, float scale = 2.0f) {
  Rng rng(seed, 3);
  std::vector<float> v(n);
  for (float& x : v) x = scale * (rng.uniform() - 0.5f);
  return v;
}

const Device kCpu = Device::cpu();

// bf16 words are the upper half of the f32 bits, rounded to nearest with ties to even; NaN
// stays a (quiet) NaN, overflow rounds to infinity; widening is exact.
TEST(Pointwise, Bf16RoundsToNearestEvenAndWidensExactly) {
  const Device cpu = Device::cpu();
  const float one_and_half_ulp = 1.0f + 1.0f / 256.0f;  // 0x3f808000: a tie, kept bit 0 -> down
  const float tie_up = 1.0f + 3.0f / 256.0f;            // 0x3f818000: a tie, kept bit 1 -> up
  const float above_tie = 1.0f + 1.0f / 256.0f + 1.0f / (1 << 20);
  const std::vector<float> x = {1.0f, -2.5f, one_and_half_ulp, tie_up,   above_tie,
                                0.0f, -0.0f, 3.4028235e38f,    INFINITY, -INFINITY,
                                NAN,  1e-45f};
  std::vector<uint16_t> words(x.size());
  floats_to_bf16(cpu, x.data(), words.data(), static_cast<int64_t>(x.size()));
  EXPECT_EQ(words[0], 0x3f80);
  EXPECT_EQ(words[1], 0xc020);
  EXPECT_EQ(words[2], 0x3f80);
  EXPECT_EQ(words[3], 0x3f82);
  EXPECT_EQ(words[4], 0x3f81);
  EXPECT_EQ(words[5], 0x0000);
  EXPECT_EQ(words[6], 0x8000);
  EXPECT_EQ(words[7], 0x7f80);  // the largest float rounds up to infinity
  EXPECT_EQ(words[8], 0x7f80);
  EXPECT_EQ(words[9], 0xff80);
  EXPECT_EQ(words[10] & 0x7fc0, 0x7fc0);  // quiet NaN
  EXPECT_EQ(words[11], 0x0000);
  for (size_t i = 0; i < x.size(); ++i) EXPECT_EQ(float_to_bf16_bits(x[i]), words[i]) << i;

  std::vector<float> back(x.size());
  bf16_to_floats(cpu, words.data(), back.data(), static_cast<int64_t>(x.size()));
  EXPECT_EQ(back[0], 1.0f);
  EXPECT_EQ(back[1], -2.5f);
  EXPECT_EQ(back[3], 1.0f + 2.0f / 128.0f);
  EXPECT_TRUE(std::isinf(back[8]) && back[8] > 0);
  EXPECT_TRUE(std::isnan(back[10]));
  // Every bf16 value survives a round trip.
  for (uint32_t w = 0; w < 0x10000; w += 7) {
    const uint16_t word = static_cast<uint16_t>(w);
    float f;
    bf16_to_floats(cpu, &word, &f, 1);
    if (!std::isnan(f)) {
      EXPECT_EQ(float_to_bf16_bits(f), word) << w;
    }
  }
}

TEST(Pointwise, CopyFillBroadcastAdd) {
  std::vector<float> src = randoms(100, 1), dst(100, 0.0f);
  copy_floats(kCpu, dst.data(), src.data(), 100);
  EXPECT_EQ(dst, src);
  fill_floats(kCpu, dst.data(), 50, 2.5f);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(dst[i], i < 50 ? 2.5f : src[i]);
  const std::vector<float> row = {1, 2, 3};
  std::vector<float> out(12, 0.0f);
  broadcast_rows(kCpu, row.data(), 3, 4, out.data());
  for (int i = 0; i < 12; ++i) EXPECT_EQ(out[i], row[i % 3]);
  std::vector<float> a = randoms(77, 2), b = randoms(77, 3), sum(77);
  add_floats(kCpu, a.data(), b.data(), sum.data(), 77);
  for (int i = 0; i < 77; ++i) EXPECT_EQ(sum[i], a[i] + b[i]);
  add_floats(kCpu, a.data(), b.data(), a.data(), 77);  // in place
  EXPECT_EQ(a, sum);
}

TEST(Pointwise, ClipAndItsGradientFollowClipByValue) {
  const std::vector<float> x = {-3.0f, -1.0f, -0.5f, 0.0f, 0.5f, 1.0f, 3.0f};
  std::vector<float> y(x.size()), g(x.size(), 2.0f);
  clip_values(kCpu, x.data(), y.data(), 7, 1.0f);
  EXPECT_EQ(y, (std::vector<float>{-1.0f, -1.0f, -0.5f, 0.0f, 0.5f, 1.0f, 1.0f}));
  mask_clip_grad(kCpu, g.data(), x.data(), 7, 1.0f);  // passes where -1 <= x <= 1
  EXPECT_EQ(g, (std::vector<float>{0.0f, 2.0f, 2.0f, 2.0f, 2.0f, 2.0f, 0.0f}));
  clip_values(kCpu, x.data(), y.data(), 7, 0.0f);  // no clip
  EXPECT_EQ(y, x);
}

// The lane order of pointwise.h, written out per column: the CUDA kernel sums in this order,
// so the CPU twin must give exactly these bits.
template <typename Acc>
Acc lane_order_sum(const std::vector<float>& x, int64_t rows, int64_t ld, int64_t j, Acc start) {
  std::vector<Acc> lane(kColumnSumLanes, Acc(0));
  for (int64_t r = 0; r < rows; ++r) lane[r % kColumnSumLanes] += static_cast<Acc>(x[r * ld + j]);
  for (int half = kColumnSumLanes / 2; half > 0; half /= 2)
    for (int l = 0; l < half; ++l) lane[l] += lane[l + half];
  return start + lane[0];
}

TEST(Pointwise, ColumnSumsAddF64InTheLaneOrderOfTheCudaKernelF32InRowOrder) {
  // Fewer rows than lanes, a few rounds of lanes, a column count over one parallel grain and
  // one 256-column pass with a tail.
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{9, 1500}, {300, 1500}, {70, 37}};
  for (const auto& [rows, cols] : shapes) {
    const int64_t ld = cols + 3;
    const std::vector<float> x = randoms(rows * ld, 4);
    std::vector<float> out = randoms(cols, 5);
    std::vector<double> out64(cols, 0.25);
    std::vector<float> expected = out;
    std::vector<double> expected64 = out64;
    for (int64_t j = 0; j < cols; ++j) {
      // f32: rows added to out[j] in order, the CPU's order since the first release.
      for (int64_t r = 0; r < rows; ++r) expected[j] += x[r * ld + j];
      expected64[j] = lane_order_sum<double>(x, rows, ld, j, expected64[j]);
    }
    column_sums_add(kCpu, x.data(), rows, cols, ld, out.data());
    column_sums_add_f64(kCpu, x.data(), rows, cols, ld, out64.data());
    EXPECT_EQ(out, expected) << rows << " rows";
    EXPECT_EQ(out64, expected64) << rows << " rows";
  }
}

TEST(Pointwise, AddScaledTableRowsAndSumToDouble) {
  const int64_t n = 6, dim = 5, vocab = 4;
  const std::vector<float> table = randoms(vocab * dim, 6), scale = randoms(n, 7);
  const std::vector<int32_t> ids = {3, 0, 3, 1, 2, 0};
  std::vector<float> out = randoms(n * dim, 8), expected = out;
  for (int64_t r = 0; r < n; ++r)
    for (int64_t d = 0; d < dim; ++d) expected[r * dim + d] += scale[r] * table[ids[r] * dim + d];
  add_scaled_table_rows(kCpu, out.data(), scale.data(), table.data(), ids.data(), n, dim);
  EXPECT_EQ(out, expected);
  double total = -1.0, reference = 0.0;
  for (float v : out) reference += v;
  sum_to_double(kCpu, out.data(), n * dim, &total);
  EXPECT_EQ(total, reference);
}

}  // namespace
}  // namespace elmo
