#include "runtime/partition.h"

#include <gtest/gtest.h>

namespace elmo {
namespace {

TEST(Partition, EvenPartsCoverEverythingOnceLowerPartsFirst) {
  for (int parts = 1; parts <= 6; ++parts)
    for (int64_t count : {0, 1, 5, 12, 13}) {
      int64_t next = 0;
      for (int part = 0; part < parts; ++part) {
        const IndexRange r = even_part(count, part, parts);
        EXPECT_EQ(r.begin, next);
        const int64_t size = r.end - r.begin;
        EXPECT_TRUE(size == count / parts || size == count / parts + 1);
        if (part > 0) EXPECT_LE(size, even_part(count, part - 1, parts).end - even_part(count, part - 1, parts).begin);
        next = r.end;
      }
      EXPECT_EQ(next, count);
    }
  EXPECT_THROW(even_part(4, 2, 2), Error);
  EXPECT_THROW(even_part(4, 0, 0), Error);
}

}  // namespace
}  // namespace elmo
