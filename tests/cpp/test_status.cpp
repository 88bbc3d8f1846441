#include <gtest/gtest.h>

#include "fabric/status.h"

namespace tfmbs::fabric {
namespace {

TEST(Status, NamesMatchTheSpec) {
  EXPECT_STREQ(status_name(Status::Ok), "OK");
  EXPECT_STREQ(status_name(Status::Pending), "PENDING");
  EXPECT_STREQ(status_name(Status::ErrAddr), "ERR_ADDR");
  EXPECT_STREQ(status_name(Status::ErrPack), "ERR_PACK");
  EXPECT_STREQ(status_name(Status::ErrBusy), "ERR_BUSY");
  EXPECT_STREQ(status_name(Status::ErrInvalid), "ERR_INVALID");
  EXPECT_STREQ(status_name(static_cast<Status>(99)), "UNKNOWN_STATUS");
  // The spec's numeric codes.
  EXPECT_EQ(static_cast<int>(Status::ErrAddr), 2);
  EXPECT_EQ(static_cast<int>(Status::ErrPack), 3);
  EXPECT_EQ(static_cast<int>(Status::ErrBusy), 4);
}

TEST(Status, FabricErrorCarriesStatus) {
  const FabricError e(Status::ErrPack, "bad byte");
  EXPECT_EQ(e.status(), Status::ErrPack);
  EXPECT_STREQ(e.what(), "bad byte");
}

}  // namespace
}  // namespace tfmbs::fabric
