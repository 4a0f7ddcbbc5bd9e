#include "runtime/dtype.h"

#include <gtest/gtest.h>

#include "runtime/error.h"

namespace elmo {
namespace {

TEST(DType, SizesAndNames) {
  EXPECT_EQ(dtype_size(DType::kF32), 4u);
  EXPECT_EQ(dtype_size(DType::kBF16), 2u);
  EXPECT_EQ(dtype_size(DType::kF16), 2u);
  EXPECT_EQ(dtype_size(DType::kI32), 4u);
  EXPECT_EQ(dtype_size(DType::kI64), 8u);
  EXPECT_EQ(dtype_size(DType::kU8), 1u);
  EXPECT_STREQ(dtype_name(DType::kBF16), "bf16");
  EXPECT_EQ(dtype_of<int64_t>(), DType::kI64);
}

TEST(Device, StringsRoundTrip) {
  EXPECT_EQ(Device::cpu().str(), "cpu");
  EXPECT_EQ(Device::cuda(3).str(), "cuda:3");
  EXPECT_EQ(Device::parse(Device::cuda(12).str()), Device::cuda(12));
  EXPECT_THROW(Device::parse("cuda:"), UsageError);
  EXPECT_THROW(Device::parse("cuda:12345"), UsageError);
  EXPECT_TRUE(Device::parse("cpu").is_cpu());
}

}  // namespace
}  // namespace elmo
