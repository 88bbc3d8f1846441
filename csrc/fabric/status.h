// Status codes of the fabric (spec: TFD status) and the exception that
// carries one. Every fabric error names what was wrong and the value.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace tfmbs::fabric {

enum class Status : uint8_t {
  Ok = 0,
  Pending = 1,
  ErrAddr = 2,  // base address out of the pool or misaligned
  ErrPack = 3,  // unknown packing or an invalid packed byte
  ErrBusy = 4,
  // Emulator extension (not a spec code): a descriptor field outside its
  // allowed range (version, lane_count, tile_mask, kernel id, or a hint or
  // flag this fabric does not understand while CRITICAL is set).
  ErrInvalid = 5,
};

const char* status_name(Status status);

class FabricError : public std::runtime_error {
 public:
  FabricError(Status status, const std::string& what)
      : std::runtime_error(what), status_(status) {}
  Status status() const { return status_; }

 private:
  Status status_;
};

}  // namespace tfmbs::fabric
