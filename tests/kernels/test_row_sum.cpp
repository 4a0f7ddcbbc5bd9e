// Planned row sums (kernels/row_sum.h) on the CPU: the plan's grouping (with extra ids that
// own no rows), the sum against a double reference and against the documented summation order
// (bitwise), scales, f32 and f64 tails, and the argument errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <vector>

#include "kernels/row_sum.h"
#include "runtime/error.h"
#include "runtime/rng.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

struct Case {
  int64_t rows = 0, dim = 0;
  std::vector<std::vector<int32_t>> ids;  // per segment
  std::vector<std::vector<float>> x;      // per segment [n, dim]
  std::vector<std::vector<float>> scale;  // per segment [n] or empty (no scale)
  std::vector<int32_t> extra;             // ids with an output row of their own
  std::vector<float> tail;                // [extra.size(), dim]
  std::vector<double> tail_f64;           // [extra.size(), dim]
};

Case make_case(int64_t dim, uint64_t seed) {
  Case c;
  c.rows = 500;
  c.dim = dim;
  Rng rng(seed, kRngSynthetic);
  c.ids = {{5, 3, 5, 499, 0, 3}, {}, {}, {3, 7, 5, 5, 5}};
  for (int i = 0; i < 700; ++i) c.ids[1].push_back(static_cast<int32_t>(rng.below(40)));
  for (int i = 0; i < 300; ++i) c.ids[2].push_back(static_cast<int32_t>(rng.below(400)));
  for (size_t s = 0; s < c.ids.size(); ++s) {
    c.x.push_back(std::vector<float>(c.ids[s].size() * dim));
    for (float& v : c.x.back()) v = rng.normal();
    c.scale.emplace_back();
    if (s % 2 == 1) {  // segments 1 and 3 are scaled
      c.scale.back().resize(c.ids[s].size());
      for (float& v : c.scale.back()) v = rng.normal();
    }
  }
  c.extra = {7, 3, 498, 499, 7, 450};  // repeats, ids with rows (3, 7, 499) and without (450, 498)
  c.tail.resize(c.extra.size() * dim);
  c.tail_f64.resize(c.extra.size() * dim);
  for (float& v : c.tail) v = rng.normal();
  for (double& v : c.tail_f64) v = 1.0 / 3.0 + rng.normal();
  return c;
}

std::vector<std::pair<const int32_t*, int64_t>> host_ids(const Case& c) {
  std::vector<std::pair<const int32_t*, int64_t>> out;
  for (const auto& ids : c.ids) out.emplace_back(ids.data(), static_cast<int64_t>(ids.size()));
  return out;
}

std::vector<RowSumSegment> segments(const Case& c) {
  std::vector<RowSumSegment> out;
  for (size_t s = 0; s < c.ids.size(); ++s)
    out.push_back({c.x[s].data(), c.scale[s].empty() ? nullptr : c.scale[s].data(),
                   static_cast<int64_t>(c.ids[s].size())});
  return out;
}

// tail index of each output row: the first occurrence of its id in c.extra, or -1.
std::vector<int32_t> tail_index(const Case& c, const RowSumPlan& plan) {
  std::vector<int32_t> index;
  for (const int32_t id : plan.unique_ids) {
    const auto it = std::find(c.extra.begin(), c.extra.end(), id);
    index.push_back(it == c.extra.end() ? -1 : static_cast<int32_t>(it - c.extra.begin()));
  }
  return index;
}

TEST(RowSumPlan, GroupsPositionsByIdAndGivesExtraIdsEmptyGroups) {
  const Case c = make_case(3, 1);
  RowSumPlan plan;
  build_row_sum_plan(host_ids(c), c.rows, plan, c.extra);
  std::set<int32_t> expected_ids(c.extra.begin(), c.extra.end());
  std::vector<int32_t> all;  // ids of the concatenated positions
  for (const auto& ids : c.ids) all.insert(all.end(), ids.begin(), ids.end());
  expected_ids.insert(all.begin(), all.end());
  EXPECT_EQ(plan.unique_ids, std::vector<int32_t>(expected_ids.begin(), expected_ids.end()));
  ASSERT_EQ(plan.offsets.size(), plan.unique_ids.size() + 1);
  EXPECT_EQ(plan.offsets.front(), 0);
  EXPECT_EQ(plan.offsets.back(), static_cast<int32_t>(all.size()));
  ASSERT_EQ(plan.positions.size(), all.size());
  for (size_t u = 0; u < plan.unique_ids.size(); ++u) {
    const int32_t id = plan.unique_ids[u];
    std::vector<int32_t> want;  // every position of id, ascending
    for (size_t p = 0; p < all.size(); ++p)
      if (all[p] == id) want.push_back(static_cast<int32_t>(p));
    const std::vector<int32_t> got(plan.positions.begin() + plan.offsets[u],
                                   plan.positions.begin() + plan.offsets[u + 1]);
    EXPECT_EQ(got, want) << "id " << id;
  }
  for (const int32_t id : {450, 498}) {  // extra ids without rows: empty groups
    const auto it = std::find(plan.unique_ids.begin(), plan.unique_ids.end(), id);
    ASSERT_NE(it, plan.unique_ids.end());
    const size_t u = static_cast<size_t>(it - plan.unique_ids.begin());
    EXPECT_EQ(plan.offsets[u], plan.offsets[u + 1]) << "id " << id;
  }
  // Without extras: the ids that have rows only.
  RowSumPlan plain;
  build_row_sum_plan(host_ids(c), c.rows, plain);
  const std::set<int32_t> with_rows(all.begin(), all.end());
  EXPECT_EQ(plain.unique_ids, std::vector<int32_t>(with_rows.begin(), with_rows.end()));
  EXPECT_EQ(plain.positions.size(), all.size());
}

TEST(RowSumPlan, OutOfRangeIdsAreErrorsNamingTheCaller) {
  RowSumPlan plan;
  const std::vector<int32_t> ids = {1, 2}, bad = {0, 10};
  EXPECT_NE(testing::error_of([&] {
              build_row_sum_plan({{bad.data(), 2}}, 10, plan);
            }).find("embedding_backward: id 10 at position 1"),
            std::string::npos);
  const std::string message = testing::error_of([&] {
    build_row_sum_plan({{ids.data(), 2}}, 10, plan, {3, -1}, "sampled softmax");
  });
  EXPECT_NE(message.find("sampled softmax: id -1"), std::string::npos) << message;
}

// The sum in the documented order (k ascending from 0.0f, products rounded on their own), and
// in double: the first must match bitwise, the second within f32 rounding.
void expect_sums(const Case& c, const RowSumPlan& plan, const std::vector<float>& got,
                 const std::vector<int32_t>& index, bool f64_tail) {
  std::vector<const float*> row_of, scale_of;
  for (size_t s = 0; s < c.ids.size(); ++s)
    for (size_t r = 0; r < c.ids[s].size(); ++r) {
      row_of.push_back(c.x[s].data() + r * c.dim);
      scale_of.push_back(c.scale[s].empty() ? nullptr : &c.scale[s][r]);
    }
  for (size_t u = 0; u < plan.unique_ids.size(); ++u)
    for (int64_t d = 0; d < c.dim; ++d) {
      float ordered = 0.0f;
      double exact = 0.0;
      for (int32_t k = plan.offsets[u]; k < plan.offsets[u + 1]; ++k) {
        const int32_t p = plan.positions[k];
        const float x = row_of[p][d];
        ordered += scale_of[p] ? *scale_of[p] * x : x;
        exact += scale_of[p] ? static_cast<double>(*scale_of[p]) * x : x;
      }
      if (index[u] >= 0) {
        const int64_t at = index[u] * c.dim + d;
        ordered += f64_tail ? static_cast<float>(c.tail_f64[at]) : c.tail[at];
        exact += f64_tail ? c.tail_f64[at] : c.tail[at];
      }
      const float value = got[u * c.dim + d];
      ASSERT_EQ(value, ordered) << "row " << u << " column " << d;
      // ~90 rows of N(0, 1) products: f32 rounding stays far below 1e-4 absolute.
      ASSERT_NEAR(value, exact, 1e-4 + 1e-5 * std::fabs(exact)) << "row " << u << " column " << d;
    }
}

TEST(RowSum, MatchesTheOrderedAndTheExactSumWithScalesAndTails) {
  for (const int64_t dim : {int64_t{1}, int64_t{19}}) {
    const Case c = make_case(dim, 2 + dim);
    RowSumPlan plan;
    build_row_sum_plan(host_ids(c), c.rows, plan, c.extra);
    const std::vector<RowSumSegment> segs = segments(c);
    const std::vector<int32_t> index = tail_index(c, plan);
    const int64_t n_out = static_cast<int64_t>(plan.unique_ids.size());
    for (const bool f64_tail : {false, true}) {
      std::vector<float> got(n_out * dim, -7.0f);
      RowSumTail tail;
      tail.index = index.data();
      if (f64_tail)
        tail.values_f64 = c.tail_f64.data();
      else
        tail.values = c.tail.data();
      row_sum_by_plan(Device::cpu(), segs.data(), static_cast<int>(segs.size()), dim,
                      plan.offsets.data(), plan.positions.data(), n_out, got.data(), tail);
      expect_sums(c, plan, got, index, f64_tail);
    }
    // No tail: output rows of extra-only ids are zero.
    std::vector<float> got(n_out * dim, -7.0f);
    row_sum_by_plan(Device::cpu(), segs.data(), static_cast<int>(segs.size()), dim,
                    plan.offsets.data(), plan.positions.data(), n_out, got.data());
    expect_sums(c, plan, got, std::vector<int32_t>(index.size(), -1), false);
    const size_t u450 = static_cast<size_t>(
        std::find(plan.unique_ids.begin(), plan.unique_ids.end(), 450) - plan.unique_ids.begin());
    for (int64_t d = 0; d < dim; ++d) EXPECT_EQ(got[u450 * dim + d], 0.0f);
  }
}

TEST(RowSum, ATailNeedsExactlyOneValueBuffer) {
  const int32_t offsets[2] = {0, 0};
  const int32_t index[1] = {0};
  const float tail_values[1] = {1.0f};
  const double tail_f64[1] = {1.0};
  float out[1] = {0.0f};
  RowSumTail both;
  both.index = index;
  both.values = tail_values;
  both.values_f64 = tail_f64;
  EXPECT_NE(testing::error_of([&] {
              row_sum_by_plan(Device::cpu(), nullptr, 0, 1, offsets, nullptr, 1, out, both);
            }).find("exactly one of values and values_f64"),
            std::string::npos);
  RowSumTail neither;
  neither.index = index;
  EXPECT_THROW(row_sum_by_plan(Device::cpu(), nullptr, 0, 1, offsets, nullptr, 1, out, neither),
               Error);
  RowSumTail ok;
  ok.index = index;
  ok.values_f64 = tail_f64;
  row_sum_by_plan(Device::cpu(), nullptr, 0, 1, offsets, nullptr, 1, out, ok);
  EXPECT_EQ(out[0], 1.0f);
}

}  // namespace
}  // namespace elmo
