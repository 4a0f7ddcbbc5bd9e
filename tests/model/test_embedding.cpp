// Model embedding: registration, init, forward, backward over several (ids, d_emb) pairs
// (FD-checked), accumulation into an existing sparse gradient.
#include <gtest/gtest.h>

#include <cmath>

#include "model/embedding.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

Tensor ids_tensor(const std::vector<int32_t>& ids) {
  Tensor t = Tensor::empty({static_cast<int64_t>(ids.size())}, DType::kI32);
  std::copy(ids.begin(), ids.end(), t.data<int32_t>());
  return t;
}

using testing::random_tensor;

TEST(Embedding, RegistersARowSparseTableAndInitialisesDeterministically) {
  ParameterStore params;
  Parameter& emb = register_embedding(params, 50, 8);
  EXPECT_TRUE(emb.row_sparse);
  EXPECT_EQ(emb.name, "embedding.weight");
  EXPECT_EQ(emb.value.shape(), (Shape{50, 8}));
  Rng a(3, kRngInit), b(3, kRngInit);
  init_uniform(emb, 0.1f, a);
  const auto first = emb.value.to_floats();
  for (float x : first) ASSERT_TRUE(x >= -0.1f && x <= 0.1f) << x;
  init_uniform(emb, 0.1f, b);
  EXPECT_EQ(emb.value.to_floats(), first);
  init_normal(emb, 0.5f, a);
  double sq = 0.0;
  for (float x : emb.value.to_floats()) sq += x * x;
  EXPECT_NEAR(std::sqrt(sq / 400), 0.5, 0.1);  // sample std of 400 normals * 0.5
  EXPECT_THROW(register_embedding(params, 0, 8), UsageError);
}

TEST(Embedding, ForwardGathersRowsAndBadIdsAreErrors) {
  ParameterStore params;
  Parameter& emb = register_embedding(params, 6, 3);
  emb.value.copy_from(random_tensor({6, 3}, 1));
  Tensor out;
  embedding_forward(emb, ids_tensor({5, 0, 5}), out);
  ASSERT_EQ(out.shape(), (Shape{3, 3}));
  const auto table = emb.value.to_floats();
  for (int64_t c = 0; c < 3; ++c) {
    EXPECT_EQ(out.data<float>()[c], table[15 + c]);
    EXPECT_EQ(out.data<float>()[3 + c], table[c]);
  }
  EXPECT_THROW(embedding_forward(emb, ids_tensor({6}), out), Error);
}

TEST(Embedding, BackwardOfBothDirectionsMatchesFiniteDifferences) {
  ParameterStore params;
  const int64_t vocab = 9, dim = 4;
  Parameter& emb = register_embedding(params, vocab, dim);
  emb.value.copy_from(random_tensor({vocab, dim}, 2));
  const std::vector<Tensor> ids = {ids_tensor({1, 7, 1, 3}), ids_tensor({3, 3, 8})};
  const std::vector<Tensor> dy = {random_tensor({4, dim}, 3), random_tensor({3, dim}, 4)};
  // loss = sum_k <dy_k, gather(table, ids_k)>, in double.
  auto loss = [&]() {
    double total = 0.0;
    for (size_t k = 0; k < ids.size(); ++k) {
      Tensor out;
      embedding_forward(emb, ids[k], out);
      for (int64_t e = 0; e < out.numel(); ++e)
        total += static_cast<double>(out.data<float>()[e]) * dy[k].data<float>()[e];
    }
    return total;
  };
  embedding_backward(emb, {{ids[0], dy[0]}, {ids[1], dy[1]}});
  EXPECT_EQ(emb.sparse_grad.ids, (std::vector<int32_t>{1, 3, 7, 8}));
  std::vector<float> dense(vocab * dim, 0.0f);  // scatter the sparse gradient
  for (size_t k = 0; k < emb.sparse_grad.ids.size(); ++k)
    for (int64_t c = 0; c < dim; ++c)
      dense[emb.sparse_grad.ids[k] * dim + c] = emb.sparse_grad.values.data<float>()[k * dim + c];
  // Linear loss: central differences are exact up to f32 rounding of the table entries.
  EXPECT_TRUE(testing::gradient_matches(loss, emb.value.data<float>(), dense.data(), vocab * dim,
                                        1e-2, 1e-4, vocab * dim));
}

TEST(Embedding, BackwardAddsToAnExistingSparseGradient) {
  ParameterStore params;
  Parameter& emb = register_embedding(params, 5, 2);
  embedding_backward(emb, {{ids_tensor({4, 1}), Tensor::from_floats({1, 2, 3, 4}, {2, 2})}});
  embedding_backward(emb, {{ids_tensor({1, 0}), Tensor::from_floats({10, 20, 30, 40}, {2, 2})}});
  EXPECT_EQ(emb.sparse_grad.ids, (std::vector<int32_t>{0, 1, 4}));
  EXPECT_EQ(emb.sparse_grad.values.to_floats(), (std::vector<float>{30, 40, 13, 24, 1, 2}));
  EXPECT_THROW(embedding_backward(emb, {{ids_tensor({1}), Tensor::from_floats({1, 2, 3}, {1, 3})}}),
               Error);
}

}  // namespace
}  // namespace elmo
