// Storage of a weight frame: 64-byte aligned bytes taken from a FabricPool
// as a Resident block, or from the plain heap when no pool is given (tests,
// tools). Move-only; frees into whatever it came from.
#pragma once

#include <cstddef>
#include <cstdint>

namespace tfmbs::fabric {

class FabricPool;

class FrameBuffer {
 public:
  FrameBuffer() = default;
  // Zero-filled. `pool` may be nullptr (heap). 0 bytes holds no memory.
  FrameBuffer(size_t bytes, FabricPool* pool);
  ~FrameBuffer();
  FrameBuffer(FrameBuffer&& other) noexcept;
  FrameBuffer& operator=(FrameBuffer&& other) noexcept;
  FrameBuffer(const FrameBuffer&) = delete;
  FrameBuffer& operator=(const FrameBuffer&) = delete;

  uint8_t* data() { return data_; }
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  FabricPool* pool() const { return pool_; }

 private:
  void release() noexcept;
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
  FabricPool* pool_ = nullptr;
};

}  // namespace tfmbs::fabric
