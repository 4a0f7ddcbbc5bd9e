// CPU row scatter: writes exactly the named rows, leaves the others bitwise unchanged, and
// refuses an id out of range before writing anything.
#include <gtest/gtest.h>

#include <vector>

#include "kernels/embedding.h"
#include "kernels/row_scatter.h"
#include "runtime/error.h"

namespace elmo {
namespace {

TEST(RowScatter, WritesNamedRowsOnly) {
  const int64_t rows = 7, dim = 3;
  std::vector<float> table(rows * dim);
  for (size_t i = 0; i < table.size(); ++i) table[i] = static_cast<float>(i);
  const std::vector<float> before = table;
  const std::vector<int32_t> ids = {1, 4, 6};
  const std::vector<float> values = {-1, -2, -3, -4, -5, -6, -7, -8, -9};
  scatter_rows(Device::cpu(), table.data(), rows, dim, ids.data(), 3, values.data());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < dim; ++c) {
      float want = before[r * dim + c];
      for (size_t k = 0; k < ids.size(); ++k)
        if (ids[k] == r) want = values[k * dim + c];
      EXPECT_EQ(table[r * dim + c], want) << "row " << r << " column " << c;
    }
}

TEST(RowScatter, InverseOfGather) {
  const int64_t rows = 50, dim = 4;
  std::vector<float> table(rows * dim);
  for (size_t i = 0; i < table.size(); ++i) table[i] = 0.5f * static_cast<float>(i);
  const std::vector<int32_t> ids = {0, 3, 17, 49};
  std::vector<float> gathered(ids.size() * dim);
  embedding_gather(Device::cpu(), table.data(), rows, dim, ids.data(), 4, gathered.data());
  std::vector<float> copy(rows * dim, 0.0f);
  scatter_rows(Device::cpu(), copy.data(), rows, dim, ids.data(), 4, gathered.data());
  for (const int32_t id : ids)
    for (int64_t c = 0; c < dim; ++c) EXPECT_EQ(copy[id * dim + c], table[id * dim + c]);
}

TEST(RowScatter, OutOfRangeIdThrowsBeforeWriting) {
  std::vector<float> table(4 * 2, 1.0f);
  const std::vector<int32_t> ids = {0, 4};
  const std::vector<float> values(4, 9.0f);
  EXPECT_THROW(scatter_rows(Device::cpu(), table.data(), 4, 2, ids.data(), 2, values.data()),
               Error);
  for (const float x : table) EXPECT_EQ(x, 1.0f);
}

}  // namespace
}  // namespace elmo
