#include "fabric/frame_buffer.h"

#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>

#include "fabric/fabric_pool.h"

namespace tfmbs::fabric {

FrameBuffer::FrameBuffer(size_t bytes, FabricPool* pool) : size_(bytes), pool_(pool) {
  if (bytes == 0) return;
  if (pool != nullptr) {
    data_ = static_cast<uint8_t*>(pool->allocate(bytes, MemoryKind::Resident));
  } else {
    // aligned_alloc wants a multiple of the alignment; SIMD kernels may read
    // whole 64-byte vectors, so round up.
    const size_t rounded = (bytes + 63) / 64 * 64;
    data_ = static_cast<uint8_t*>(std::aligned_alloc(64, rounded));
    if (data_ == nullptr) throw std::bad_alloc();
  }
  std::memset(data_, 0, bytes);
}

void FrameBuffer::release() noexcept {
  if (data_ == nullptr) return;
  if (pool_ != nullptr) {
    try {
      pool_->free(data_);
    } catch (...) {
      // free() only throws for a foreign pointer, which cannot happen here.
    }
  } else {
    std::free(data_);
  }
  data_ = nullptr;
  size_ = 0;
}

FrameBuffer::~FrameBuffer() { release(); }

FrameBuffer::FrameBuffer(FrameBuffer&& o) noexcept
    : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)), pool_(o.pool_) {}

FrameBuffer& FrameBuffer::operator=(FrameBuffer&& o) noexcept {
  if (this != &o) {
    release();
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
    pool_ = o.pool_;
  }
  return *this;
}

}  // namespace tfmbs::fabric
