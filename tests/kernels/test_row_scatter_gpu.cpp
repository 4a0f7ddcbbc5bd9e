// GPU row scatter: the same rows as the CPU twin, bit for bit.
#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "kernels/row_scatter.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

TEST(RowScatterGpu, MatchesCpu) {
  ELMO_SKIP_WITHOUT_GPU();
  const Device gpu = Device::cuda(0);
  const int64_t rows = 3000, dim = 33;
  Tensor table = testing::random_tensor({rows, dim}, 1);
  std::vector<int32_t> id_list;
  for (int32_t id = 5; id < rows; id += 7) id_list.push_back(id);
  const int64_t n = static_cast<int64_t>(id_list.size());
  Tensor ids = Tensor::empty({n}, DType::kI32);
  std::copy(id_list.begin(), id_list.end(), ids.data<int32_t>());
  Tensor values = testing::random_tensor({n, dim}, 2);
  Tensor gpu_table = table.to(gpu), gpu_ids = ids.to(gpu), gpu_values = values.to(gpu);
  scatter_rows(Device::cpu(), table.data<float>(), rows, dim, ids.data<int32_t>(), n,
               values.data<float>());
  scatter_rows(gpu, gpu_table.data<float>(), rows, dim, gpu_ids.data<int32_t>(), n,
               gpu_values.data<float>());
  EXPECT_EQ(gpu_table.to_floats(), table.to_floats());
}

}  // namespace
}  // namespace elmo
