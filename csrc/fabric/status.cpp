#include "fabric/status.h"

namespace tfmbs::fabric {

const char* status_name(Status status) {
  switch (status) {
    case Status::Ok: return "OK";
    case Status::Pending: return "PENDING";
    case Status::ErrAddr: return "ERR_ADDR";
    case Status::ErrPack: return "ERR_PACK";
    case Status::ErrBusy: return "ERR_BUSY";
    case Status::ErrInvalid: return "ERR_INVALID";
  }
  // A value cast from a corrupted or newer descriptor: say so rather than
  // returning garbage.
  return "UNKNOWN_STATUS";
}

}  // namespace tfmbs::fabric
