#include "runtime/tensor.h"

#include <gtest/gtest.h>

namespace elmo {
namespace {

TEST(Tensor, ShapesViewsAndCopies) {
  Tensor t = Tensor::from_floats({1, 2, 3, 4, 5, 6}, {3, 2});
  EXPECT_EQ(t.numel(), 6);
  EXPECT_EQ(t.describe(), "f32[3, 2]@cpu");
  Tensor r = t.rows(1, 3);
  EXPECT_EQ(r.shape(), Shape({2, 2}));
  EXPECT_EQ(r.data<float>()[0], 3.0f);
  r.data<float>()[0] = 30.0f;  // views share storage
  EXPECT_EQ(t.data<float>()[2], 30.0f);
  Tensor c = t.clone();
  c.data<float>()[0] = -1.0f;
  EXPECT_EQ(t.data<float>()[0], 1.0f);
  EXPECT_EQ(t.reshape({6}).shape(), Shape({6}));
}

TEST(Tensor, ErrorsNameTheProblem) {
  Tensor t = Tensor::zeros({2, 3});
  EXPECT_THROW(t.reshape({4}), Error);
  EXPECT_THROW(t.rows(1, 3), Error);
  EXPECT_THROW(t.data<int32_t>(), Error);
  try {
    check_tensor(t, "weight", DType::kF32, {2, 4});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("weight: expected f32[2, 4], got f32[2, 3]@cpu"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(Shape({1, 2, 3, 4, 5}), Error);
}

TEST(Device, Parse) {
  EXPECT_EQ(Device::parse("cpu"), Device::cpu());
  EXPECT_EQ(Device::parse("cuda:1"), Device::cuda(1));
  EXPECT_EQ(Device::parse("cuda"), Device::cuda(0));
  EXPECT_THROW(Device::parse("tpu"), UsageError);
  EXPECT_THROW(Device::parse("cuda:x"), UsageError);
}

}  // namespace
}  // namespace elmo
