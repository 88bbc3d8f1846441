#include "fabric/frame_residency.h"

#include <stdexcept>
#include <string>
#include <utility>

namespace tfmbs::fabric {

FrameResidency::FrameResidency(FabricPool& pool, Telemetry& telemetry) : pool_(pool), telemetry_(telemetry) {
  callback_ = pool_.add_pressure_callback([this](size_t needed) {
    const size_t freed = evict(needed);
    // Freed blocks stay cached in their segments, and the pool drops its
    // cache only once per allocation: hand whole free segments back, so a
    // request of the other size class (small / large) can use them too.
    if (freed > 0) pool_.release_cache();
    return freed;
  });
}

FrameResidency::~FrameResidency() { pool_.remove_pressure_callback(callback_); }

FrameResidency::Frame& FrameResidency::at(Id id) {
  auto it = frames_.find(id);
  if (it == frames_.end()) throw std::invalid_argument("FrameResidency: no frame " + std::to_string(id));
  return it->second;
}

FrameResidency::Id FrameResidency::add(size_t bytes, bool pinned, Evict evict) {
  std::lock_guard<std::mutex> lock(mu_);
  const Id id = next_id_++;
  Frame& f = frames_[id];
  f.bytes = bytes;
  f.pinned = pinned;
  f.last_use = ++clock_;
  f.evict = std::move(evict);
  return id;
}

void FrameResidency::remove(Id id) {
  std::lock_guard<std::mutex> lock(mu_);
  frames_.erase(id);
}

FrameResidency::Use FrameResidency::use(Id id) {
  std::lock_guard<std::mutex> lock(mu_);
  Frame& f = at(id);
  ++f.uses;
  f.last_use = ++clock_;
  if (f.resident) {
    telemetry_.add_residency_hit();
  } else {
    telemetry_.add_residency_miss();
  }
  return Use(this, id, f.resident);
}

FrameResidency::Use FrameResidency::hold(Id id) {
  std::lock_guard<std::mutex> lock(mu_);
  Frame& f = at(id);
  ++f.uses;
  return Use(this, id, f.resident);
}

void FrameResidency::set_resident(Id id, size_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  Frame& f = at(id);
  f.resident = true;
  f.bytes = bytes;
}

size_t FrameResidency::evict(size_t needed) {
  std::lock_guard<std::mutex> lock(mu_);
  size_t freed = 0;
  while (freed < needed) {
    Frame* victim = nullptr;
    for (auto& [id, f] : frames_) {
      if (evictable(f) && (!victim || f.last_use < victim->last_use)) victim = &f;
    }
    if (victim == nullptr) break;
    victim->evict();
    victim->resident = false;
    freed += victim->bytes;
    telemetry_.add_eviction();
  }
  return freed;
}

bool FrameResidency::has_evictable() const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [id, f] : frames_) {
    if (evictable(f)) return true;
  }
  return false;
}

bool FrameResidency::is_resident(Id id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = frames_.find(id);
  if (it == frames_.end()) throw std::invalid_argument("FrameResidency: no frame " + std::to_string(id));
  return it->second.resident;
}

size_t FrameResidency::frames() const {
  std::lock_guard<std::mutex> lock(mu_);
  return frames_.size();
}

size_t FrameResidency::resident_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  size_t bytes = 0;
  for (const auto& [id, f] : frames_) {
    if (f.resident) bytes += f.bytes;
  }
  return bytes;
}

FrameResidency::Use::Use(Use&& other) noexcept
    : owner_(std::exchange(other.owner_, nullptr)), id_(other.id_), hit_(other.hit_) {}

FrameResidency::Use& FrameResidency::Use::operator=(Use&& other) noexcept {
  if (this != &other) {
    release();
    owner_ = std::exchange(other.owner_, nullptr);
    id_ = other.id_;
    hit_ = other.hit_;
  }
  return *this;
}

FrameResidency::Use::~Use() { release(); }

void FrameResidency::Use::release() {
  if (!owner_) return;
  std::lock_guard<std::mutex> lock(owner_->mu_);
  auto it = owner_->frames_.find(id_);
  if (it != owner_->frames_.end()) --it->second.uses;
  owner_ = nullptr;
}

}  // namespace tfmbs::fabric
