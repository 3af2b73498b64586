#include <gtest/gtest.h>

#include "ingest/backpressure.h"

namespace mailroom {
namespace {

TEST(Backpressure, PausesAtHighAndResumesBelowLow) {
  Backpressure bp(WaterMarks{100, 0, 0}, WaterMarks{80, 0, 0});
  EXPECT_FALSE(bp.Update({99, 0, 0}));
  EXPECT_TRUE(bp.Update({100, 0, 0}));
  EXPECT_EQ(bp.reason(), "queued jobs 100 >= 100");
  EXPECT_TRUE(bp.Update({90, 0, 0}));  // between the marks: stays paused
  EXPECT_FALSE(bp.Update({79, 0, 0}));
  EXPECT_EQ(bp.reason(), "");
}

TEST(Backpressure, FreeDiskIsAFloor) {
  Backpressure bp(WaterMarks{0, 0, 1000}, WaterMarks{0, 0, 2000});
  EXPECT_FALSE(bp.Update({1'000'000, 1'000'000, 1000}));  // unset marks ignored
  EXPECT_TRUE(bp.Update({0, 0, 999}));
  EXPECT_EQ(bp.reason(), "free disk 999 < 1000");
  EXPECT_TRUE(bp.Update({0, 0, 1500}));
  EXPECT_FALSE(bp.Update({0, 0, 2000}));
}

TEST(Backpressure, SpoolBytes) {
  Backpressure bp(WaterMarks{0, 500, 0}, WaterMarks{0, 400, 0});
  EXPECT_TRUE(bp.Update({0, 600, 0}));
  EXPECT_EQ(bp.reason(), "spool bytes 600 >= 500");
  EXPECT_FALSE(bp.Update({0, 399, 0}));
}

}  // namespace
}  // namespace mailroom
