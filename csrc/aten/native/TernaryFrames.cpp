#include "aten/native/TernaryFrames.h"

#include <ATen/ATen.h>

#include <cstring>
#include <map>
#include <mutex>
#include <tuple>

#include "aten/CpuAlias.h"
#include "aten/SharedStorages.h"
#include "device/TfmbsDevices.h"
#include "fabric/pt5_codec.h"
#include "fabric/t2b_codec.h"

namespace tfmbs {
namespace {

struct FrameKey {
  const c10::StorageImpl* storage;
  int64_t offset, rows, cols;
  Packing packing;
  bool operator<(const FrameKey& o) const {
    return std::tie(storage, offset, rows, cols, packing) <
           std::tie(o.storage, o.offset, o.rows, o.cols, o.packing);
  }
};

// How a cached frame is known to still hold the packed tensor's contents.
// Version: the tensor's version counter, which every in-place write through
// it or its views bumps. Fingerprint: a hash of the packed bytes, for
// tensors whose writes no version counter sees.
enum class Tracking { Version, Fingerprint };

struct CachedFrame {
  explicit CachedFrame(c10::weak_intrusive_ptr<c10::StorageImpl> o) : owner(std::move(o)) {}
  c10::weak_intrusive_ptr<c10::StorageImpl> owner;  // also keeps the key's address unique
  Tracking tracking = Tracking::Version;
  uint64_t state = 0;  // the version, or the fingerprint, the frame was built from
  const void* data = nullptr;
  c10::DeviceIndex device = 0;
  fabric::FrameResidency::Id id = 0;
  // Guarded by g_mutex; empty while evicted.
  std::shared_ptr<const fabric::FastFrame> fast;
  std::shared_ptr<const fabric::LaneMajorFrame> lane_major;  // built on first reference-engine use
};

// Lock order: a device's FrameResidency, then g_mutex (an eviction drops a
// frame under both), so nothing here calls a FrameResidency under g_mutex.
std::mutex g_mutex;
auto* g_cache = new std::map<FrameKey, std::shared_ptr<CachedFrame>>;  // leaked, as every singleton

// A 64-bit hash of `bytes` (four independent multiply-xor lanes, so it runs
// near memory bandwidth).
uint64_t fingerprint(const uint8_t* bytes, size_t n) {
  constexpr uint64_t kMul = 0x9E3779B97F4A7C15ull;
  uint64_t h[4] = {n, kMul, ~n, kMul ^ n};
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    for (int j = 0; j < 4; ++j) {
      uint64_t w;
      std::memcpy(&w, bytes + i + 8 * j, 8);
      h[j] = (h[j] ^ w) * kMul;
      h[j] ^= h[j] >> 29;
    }
  }
  uint64_t tail = 0;
  for (; i < n; ++i) tail = (tail << 8) | bytes[i];
  uint64_t r = (h[0] * 31 + h[1]) * 31 + h[2];
  r = ((r * 31 + h[3]) ^ tail) * kMul;
  return r ^ (r >> 32);
}

Tracking tracking_of(const at::Tensor& packed) {
  return packed.is_inference() || is_shared_by_set(packed.storage()) ? Tracking::Fingerprint
                                                                     : Tracking::Version;
}

uint64_t state_of(const at::Tensor& packed, Tracking tracking) {
  if (tracking == Tracking::Version) {
    return packed.unsafeGetTensorImpl()->version_counter().current_version();
  }
  return fingerprint(static_cast<const uint8_t*>(packed.const_data_ptr()),
                     static_cast<size_t>(packed.nbytes()));
}

std::vector<int8_t> decode_weights(const at::Tensor& packed, const LinearArgs& a) {
  std::vector<int8_t> trits(static_cast<size_t>(a.m * a.k));
  const auto* src = static_cast<const uint8_t*>(packed.const_data_ptr());
  run_codec("tfmbs.ternary_linear: packed_weight", [&] {
    if (a.packing == Packing::Pt5) fabric::pt5::decode(src, trits.size(), trits.data());
    else fabric::t2b::decode(src, trits.size(), trits.data());
  });
  return trits;
}

// Builds in device `dev`'s pool (whose pressure callbacks have evicted what
// they could before this fails).
template <typename Fn>
auto build_in_pool(Fn fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const fabric::OutOfMemory& e) {
    TORCH_CHECK_WITH(OutOfMemoryError, false,
                     "tfmbs.ternary_linear: no room for the weight frame (no unused cached frame left to evict): ",
                     e.what());
  }
}

std::shared_ptr<const fabric::FastFrame> build_fast(const std::vector<int8_t>& trits, const LinearArgs& a,
                                                    c10::DeviceIndex dev) {
  const int tiles = static_cast<int>(fabric_config().tiles);
  return build_in_pool([&] {
    return std::make_shared<const fabric::FastFrame>(
        fabric::FastFrame::from_trits(trits.data(), a.m, a.k, tiles, &device_pool(dev)));
  });
}

std::shared_ptr<const fabric::LaneMajorFrame> build_lane_major(const std::vector<int8_t>& trits,
                                                               const LinearArgs& a, c10::DeviceIndex dev) {
  const int tiles = static_cast<int>(fabric_config().tiles);
  return build_in_pool([&] {
    return std::make_shared<const fabric::LaneMajorFrame>(
        fabric::LaneMajorFrame::from_trits(trits.data(), a.m, a.k, tiles, &device_pool(dev)));
  });
}

size_t bytes_of(const CachedFrame& e) {
  return (e.fast ? e.fast->bytes() : 0) + (e.lane_major ? e.lane_major->size() : 0);
}

// Frames that left the cache, to be removed from their FrameResidency once
// g_mutex is released.
using Dropped = std::vector<std::shared_ptr<CachedFrame>>;

void forget(const Dropped& dropped) {
  for (const auto& e : dropped) {
    if (e->id != 0) device_residency(e->device).remove(e->id);
  }
}

// Moves entries whose packed tensor is gone to `dropped`.
void sweep_dead_locked(Dropped& dropped) {
  for (auto it = g_cache->begin(); it != g_cache->end();) {
    if (it->second->owner.expired()) {
      dropped.push_back(std::move(it->second));
      it = g_cache->erase(it);
    } else {
      ++it;
    }
  }
}

fabric::FrameResidency::Evict evict(const std::shared_ptr<CachedFrame>& entry) {
  return [weak = std::weak_ptr<CachedFrame>(entry)] {
    auto e = weak.lock();
    if (!e) return;
    std::lock_guard<std::mutex> lock(g_mutex);
    e->fast.reset();  // the pool blocks go back (no call holds them: it would be in use)
    e->lane_major.reset();
  };
}

// Adds the reference engine's layout to `entry` if it has none yet.
void attach_lane_major(CachedFrame& entry, const LinearArgs& a) {
  std::shared_ptr<const fabric::FastFrame> fast;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    if (entry.lane_major) return;
    fast = entry.fast;
  }
  auto lane_major = build_lane_major(fast->to_trits(), a, entry.device);
  std::lock_guard<std::mutex> lock(g_mutex);
  if (!entry.lane_major) entry.lane_major = std::move(lane_major);
}

ResidentFrame uncached_frame(const at::Tensor& packed, const LinearArgs& a, bool need_lane_major) {
  const c10::DeviceIndex dev = packed.device().index();
  device_telemetry(dev).add_residency_miss();
  std::vector<int8_t> trits = decode_weights(packed, a);
  ResidentFrame out;
  out.fast = build_fast(trits, a, dev);
  if (need_lane_major) out.lane_major = build_lane_major(trits, a, dev);
  return out;
}

}  // namespace

ResidentFrame resident_frame(const at::Tensor& packed, const LinearArgs& a, bool need_lane_major) {
  check_allocated(packed);
  // A strided or expanded view: a frame for this call only.
  if (!packed.is_contiguous()) return uncached_frame(packed.contiguous(), a, need_lane_major);
  const c10::DeviceIndex dev = packed.device().index();
  auto& telemetry = device_telemetry(dev);
  auto& residency = device_residency(dev);
  const FrameKey key{packed.storage().unsafeGetStorageImpl(), packed.storage_offset(), a.m, a.k, a.packing};
  const Tracking tracking = tracking_of(packed);
  const uint64_t state = state_of(packed, tracking);
  const void* data = packed.const_data_ptr();
  std::shared_ptr<CachedFrame> entry;
  Dropped dropped;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    auto it = g_cache->find(key);
    if (it != g_cache->end()) {
      const auto& e = it->second;
      if (!e->owner.expired() && e->tracking == tracking && e->state == state && e->data == data &&
          e->device == dev) {
        entry = e;
      } else {
        if (!e->owner.expired()) telemetry.add_eviction();  // the weights changed
        dropped.push_back(std::move(it->second));
        g_cache->erase(it);
      }
    }
    static uint32_t calls = 0;
    if (!entry || (++calls & 255) == 0) sweep_dead_locked(dropped);
  }
  forget(dropped);

  ResidentFrame out;
  if (entry) {
    out.in_use = residency.use(entry->id);
    if (!out.in_use.hit()) {  // evicted: rebuild from the packed tensor
      std::shared_ptr<const fabric::FastFrame> fast;
      {
        std::lock_guard<std::mutex> lock(g_mutex);
        fast = entry->fast;  // a concurrent call may have rebuilt it
      }
      if (!fast) fast = build_fast(decode_weights(packed, a), a, dev);
      size_t bytes = 0;
      {
        std::lock_guard<std::mutex> lock(g_mutex);
        if (!entry->fast) entry->fast = std::move(fast);
        bytes = bytes_of(*entry);
      }
      residency.set_resident(entry->id, bytes);
    }
  } else {
    telemetry.add_residency_miss();
    entry = std::make_shared<CachedFrame>(packed.storage().getWeakStorageImpl());
    entry->tracking = tracking;
    entry->state = state;
    entry->data = data;
    entry->device = dev;
    entry->fast = build_fast(decode_weights(packed, a), a, dev);
    entry->id = residency.add(bytes_of(*entry), /*pinned=*/false, evict(entry));
    out.in_use = residency.hold(entry->id);
    {
      std::lock_guard<std::mutex> lock(g_mutex);
      auto [it, inserted] = g_cache->try_emplace(key, entry);
      if (!inserted) {  // a concurrent call cached this tensor too: keep ours
        dropped.push_back(std::move(it->second));
        it->second = entry;
      }
    }
    forget(dropped);
  }
  if (need_lane_major) {
    attach_lane_major(*entry, a);
    size_t bytes;
    {
      std::lock_guard<std::mutex> lock(g_mutex);
      bytes = bytes_of(*entry);
    }
    residency.set_resident(entry->id, bytes);
  }
  std::lock_guard<std::mutex> lock(g_mutex);
  out.fast = entry->fast;
  out.lane_major = entry->lane_major;
  return out;
}

std::vector<ResidentFrameInfo> resident_frames() {
  Dropped dropped;
  std::vector<ResidentFrameInfo> frames;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    sweep_dead_locked(dropped);
    for (const auto& [key, e] : *g_cache) {
      if (!e->fast) continue;  // evicted: known, not resident
      frames.push_back({e->device, e->data, key.rows, key.cols, bytes_of(*e)});
    }
  }
  forget(dropped);
  return frames;
}

std::vector<int64_t> frame_cache_info() {
  int64_t bytes = 0;
  const std::vector<ResidentFrameInfo> frames = resident_frames();
  for (const ResidentFrameInfo& f : frames) bytes += static_cast<int64_t>(f.bytes);
  return {static_cast<int64_t>(frames.size()), bytes};
}

void frame_cache_clear() {
  Dropped dropped;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    for (auto& [key, e] : *g_cache) dropped.push_back(std::move(e));
    g_cache->clear();
  }
  forget(dropped);
}

}  // namespace tfmbs
