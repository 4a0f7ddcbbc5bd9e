#include "model/parameters.h"

#include <gtest/gtest.h>

namespace elmo {
namespace {

TEST(ParameterStore, KeepsOrderAndNames) {
  ParameterStore store;
  store.add("embedding.weight", {10, 4}, true);
  store.add("lstm.fwd.0.bias", {16});
  EXPECT_EQ(store.size(), 2u);
  EXPECT_EQ(store.numel(), 56);
  EXPECT_EQ(store.all()[0]->name, "embedding.weight");
  EXPECT_TRUE(store.get("embedding.weight").row_sparse);
  EXPECT_FALSE(store.get("embedding.weight").grad.defined());
  EXPECT_EQ(store.get("lstm.fwd.0.bias").grad.numel(), 16);
  EXPECT_EQ(store.get("embedding.weight").row_dim(), 4);
  EXPECT_THROW(store.add("lstm.fwd.0.bias", {2}), Error);
  EXPECT_THROW(store.get("nope"), Error);
  store.get("lstm.fwd.0.bias").grad.fill_(3.0f);
  store.get("embedding.weight").sparse_grad.ids = {1, 2};
  store.zero_grads();
  EXPECT_EQ(store.get("lstm.fwd.0.bias").grad.to_floats()[5], 0.0f);
  EXPECT_TRUE(store.get("embedding.weight").sparse_grad.ids.empty());
}

}  // namespace
}  // namespace elmo
