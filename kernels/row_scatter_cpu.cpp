// CPU row scatter (and the device dispatch): see row_scatter.h.
#include <algorithm>

#include "kernels/embedding.h"
#include "kernels/launchers.h"
#include "kernels/row_scatter.h"

namespace elmo {

void scatter_rows_cpu(float* table, int64_t table_rows, int64_t dim, const int32_t* ids, int64_t n,
                      const float* rows) {
  check_row_ids(ids, n, table_rows, "scatter_rows");
  for (int64_t k = 0; k < n; ++k)
    std::copy_n(rows + k * dim, dim, table + static_cast<int64_t>(ids[k]) * dim);
}

void scatter_rows(Device device, float* table, int64_t table_rows, int64_t dim, const int32_t* ids,
                  int64_t n, const float* rows) {
  if (device.is_cuda())
    scatter_rows_cuda(table, dim, ids, n, rows);
  else
    scatter_rows_cpu(table, table_rows, dim, ids, n, rows);
}

}  // namespace elmo
