// Embedding gather and backward against naive loops: duplicates, unsorted ids, several
// segments, bad ids.
#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <vector>

#include "kernels/embedding.h"
#include "kernels/row_sum.h"
#include "runtime/rng.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

using testing::random_tensor;

Tensor ids_tensor(const std::vector<int32_t>& ids) {
  Tensor t = Tensor::empty({static_cast<int64_t>(ids.size())}, DType::kI32);
  std::copy(ids.begin(), ids.end(), t.data<int32_t>());
  return t;
}

TEST(EmbeddingGather, CopiesTheRowsOfTheIds) {
  const int64_t rows = 11, dim = 5;
  Tensor table = random_tensor({rows, dim}, 1);
  const std::vector<int32_t> ids = {3, 0, 10, 3, 7, 3};
  Tensor out = Tensor::empty({6, dim});
  embedding_gather(table, ids_tensor(ids), out);
  for (size_t i = 0; i < ids.size(); ++i)
    for (int64_t c = 0; c < dim; ++c)
      EXPECT_EQ(out.data<float>()[i * dim + c], table.data<float>()[ids[i] * dim + c]);
}

TEST(EmbeddingGather, LargeInputUsesThreadsAndStaysExact) {
  const int64_t rows = 1000, dim = 64, n = 5000;
  Tensor table = random_tensor({rows, dim}, 2);
  Rng rng(3, 0);
  std::vector<int32_t> ids(n);
  for (auto& id : ids) id = static_cast<int32_t>(rng.below(rows));
  Tensor out = Tensor::empty({n, dim});
  embedding_gather(table, ids_tensor(ids), out);
  for (int64_t i = 0; i < n; ++i)
    ASSERT_EQ(0, std::memcmp(out.data<float>() + i * dim, table.data<float>() + ids[i] * dim,
                             dim * sizeof(float)))
        << "row " << i;
}

TEST(EmbeddingGather, OutOfRangeIdIsAnErrorNamingIdAndV) {
  Tensor table = random_tensor({4, 2}, 1);
  Tensor out = Tensor::empty({3, 2});
  for (int32_t bad : {4, -1}) {
    try {
      embedding_gather(table, ids_tensor({0, bad, 1}), out);
      FAIL() << "no error for id " << bad;
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("id " + std::to_string(bad)), std::string::npos) << msg;
      EXPECT_NE(msg.find("4 rows"), std::string::npos) << msg;
      EXPECT_NE(msg.find("position 1"), std::string::npos) << msg;
    }
  }
}

TEST(EmbeddingGather, ShapeMismatchIsAnError) {
  Tensor table = random_tensor({4, 2}, 1);
  Tensor out = Tensor::empty({3, 3});
  EXPECT_THROW(embedding_gather(table, ids_tensor({0, 1, 2}), out), Error);
}

// Reference: per id, sum over positions in increasing order, starting at 0.
std::map<int32_t, std::vector<float>> naive_backward(const std::vector<std::vector<int32_t>>& ids,
                                                     const std::vector<Tensor>& dy, int64_t dim) {
  std::map<int32_t, std::vector<float>> sums;
  for (size_t s = 0; s < ids.size(); ++s)
    for (size_t i = 0; i < ids[s].size(); ++i) {
      auto& row = sums.try_emplace(ids[s][i], std::vector<float>(dim, 0.0f)).first->second;
      for (int64_t c = 0; c < dim; ++c) row[c] += dy[s].data<float>()[i * dim + c];
    }
  return sums;
}

void expect_matches_naive(const std::vector<std::vector<int32_t>>& ids, int64_t rows, int64_t dim,
                          uint64_t seed) {
  std::vector<Tensor> id_tensors, dy;
  for (size_t s = 0; s < ids.size(); ++s) {
    id_tensors.push_back(ids_tensor(ids[s]));
    dy.push_back(random_tensor({static_cast<int64_t>(ids[s].size()), dim}, seed + s));
  }
  std::vector<int32_t> unique;
  Tensor values;
  embedding_backward(id_tensors, dy, rows, unique, values);
  const auto ref = naive_backward(ids, dy, dim);
  ASSERT_EQ(unique.size(), ref.size());
  ASSERT_EQ(values.shape(), (Shape{static_cast<int64_t>(ref.size()), dim}));
  size_t k = 0;
  for (const auto& [id, row] : ref) {
    ASSERT_EQ(unique[k], id) << "unique id " << k;
    // Tolerance 0: same additions in the same (position) order as the reference.
    EXPECT_TRUE(testing::all_close(values.data<float>() + k * dim, row.data(), dim, 0.0f, 0.0f))
        << "id " << id << " (seed " << seed << ")";
    ++k;
  }
}

TEST(EmbeddingBackward, SumsDuplicatesOfUnsortedIds) {
  expect_matches_naive({{5, 1, 5, 0, 9, 1, 5}}, 10, 3, 10);
}

TEST(EmbeddingBackward, SeveralSegmentsShareRows) {
  expect_matches_naive({{4, 2, 4}, {2, 7}, {}, {7, 7, 0}}, 8, 4, 20);
}

TEST(EmbeddingBackward, ManyIdsManyDuplicatesLargeDim) {
  Rng rng(5, 0);
  std::vector<std::vector<int32_t>> ids(2, std::vector<int32_t>(3000));
  for (auto& seg : ids)
    for (auto& id : seg) id = static_cast<int32_t>(rng.below(700));
  expect_matches_naive(ids, 1000, 37, 30);
}

TEST(EmbeddingBackward, EmptyInputGivesNoRows) {
  std::vector<int32_t> unique = {1};
  Tensor values;
  embedding_backward({ids_tensor({})}, {Tensor::empty({0, 3})}, 5, unique, values);
  EXPECT_TRUE(unique.empty());
  EXPECT_EQ(values.shape(), (Shape{0, 3}));
}

TEST(EmbeddingBackward, OutOfRangeIdIsAnError) {
  std::vector<int32_t> unique;
  Tensor values;
  try {
    embedding_backward({ids_tensor({1, 2}), ids_tensor({0, 12})},
                       {random_tensor({2, 2}, 1), random_tensor({2, 2}, 2)}, 12, unique, values);
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("id 12"), std::string::npos) << msg;
    EXPECT_NE(msg.find("12 rows"), std::string::npos) << msg;
  }
}

// The host-built plan gives the same ids and bit-identical rows as embedding_backward_cpu.
TEST(RowSumPlan, MatchesEmbeddingBackward) {
  const int64_t rows = 300, dim = 17;
  std::vector<std::vector<int32_t>> ids = {{5, 3, 5, 299, 0, 3}, {}, {3, 7, 5, 5, 5}};
  Rng rng(8, 1);
  for (int i = 0; i < 2000; ++i) ids[1].push_back(static_cast<int32_t>(rng.below(rows)));
  std::vector<Tensor> id_tensors, dy;
  std::vector<std::pair<const int32_t*, int64_t>> host;
  std::vector<RowSumSegment> segments;
  for (size_t s = 0; s < ids.size(); ++s) {
    id_tensors.push_back(ids_tensor(ids[s]));
    dy.push_back(random_tensor({static_cast<int64_t>(ids[s].size()), dim}, 20 + s));
    host.emplace_back(ids[s].data(), static_cast<int64_t>(ids[s].size()));
    segments.push_back({dy.back().data<float>(), nullptr, static_cast<int64_t>(ids[s].size())});
  }
  std::vector<int32_t> unique;
  Tensor values;
  embedding_backward(id_tensors, dy, rows, unique, values);
  RowSumPlan plan;
  build_row_sum_plan(host, rows, plan);
  EXPECT_EQ(plan.unique_ids, unique);
  ASSERT_EQ(plan.offsets.size(), unique.size() + 1);
  EXPECT_EQ(plan.offsets.back(), 2011);
  Tensor planned = Tensor::empty({static_cast<int64_t>(unique.size()), dim});
  row_sum_by_plan(Device::cpu(), segments.data(), static_cast<int>(segments.size()), dim,
                  plan.offsets.data(), plan.positions.data(), static_cast<int64_t>(unique.size()),
                  planned.data<float>());
  EXPECT_EQ(planned.to_floats(), values.to_floats());
  const std::vector<int32_t> bad = {1, 300};
  EXPECT_THROW(build_row_sum_plan({{bad.data(), 2}}, rows, plan), Error);
}

}  // namespace
}  // namespace elmo
