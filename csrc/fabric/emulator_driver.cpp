#include "fabric/emulator_driver.h"

#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "fabric/fabric_pool.h"
#include "fabric/frame_residency.h"
#include "fabric/lane_major_frame.h"
#include "fabric/pt5_codec.h"
#include "fabric/reference_engine.h"
#include "fabric/t2b_codec.h"
#include "fabric/tgemm.h"

namespace tfmbs::fabric {

// A frame's bytes, in the pool (resident) or on the heap (evicted): raw
// packed trits (load_frame) or a weight matrix in the layout of the
// driver's engine (load_weights). Exactly one member holds memory.
struct EmulatorDriver::Storage {
  FrameBuffer raw;
  LaneMajorFrame lane_major;  // Engine::Reference
  FastFrame fast;             // Engine::Fast
  const uint8_t* data() const { return raw.data() ? raw.data() : lane_major.data() ? lane_major.data() : fast.codes(); }
  size_t size() const { return raw.data() ? raw.size() : lane_major.data() ? lane_major.size() : fast.bytes(); }
};

struct EmulatorDriver::Frame {
  // Fixed at load.
  uint32_t flags = 0;
  bool weights = false;
  int64_t rows = 0, cols = 0;  // weights
  size_t bytes = 0;            // raw frames: packed bytes loaded
  size_t span = 0;             // bytes a TFD may name from the handle on
  FrameResidency::Id id = 0;   // in residency_
  // Guarded by mu_. `storage` is also read without it by a task that has
  // the frame in use, which keeps it resident and unchanged.
  Storage storage;                      // while resident
  std::shared_ptr<const Storage> host;  // while evicted (shared: a reload reads it unlocked)
};

namespace {

std::string hex(uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

// Reload tries per miss; see use().
constexpr int kReloadAttempts = 8;

[[noreturn]] void fail(Status s, const std::string& what) { throw FabricError(s, "TFD: " + what); }

FastEngineOptions engine_options(const FabricConfig& c) {
  FastEngineOptions o;
  o.threads = static_cast<int>(c.threads);
  return o;
}

// A frame's trits as PT-5 bytes (the elementwise engines' input format).
std::vector<uint8_t> as_pt5(const uint8_t* data, uint16_t packing, int64_t n) {
  std::vector<uint8_t> pt5(pt5::packed_size(static_cast<size_t>(n)));
  if (packing == static_cast<uint16_t>(Packing::Pt5)) {
    std::memcpy(pt5.data(), data, pt5.size());
  } else {
    std::vector<int8_t> trits(static_cast<size_t>(n));
    t2b::decode(data, trits.size(), trits.data());
    pt5::encode(trits.data(), trits.size(), pt5.data());
  }
  return pt5;
}

}  // namespace

EmulatorDriver::EmulatorDriver(const FabricConfig& config, FabricPool& pool, Engine engine)
    : config_((config.validate(), config)),
      pool_(pool),
      engine_(engine),
      fast_(engine_options(config)),
      telemetry_(static_cast<int>(config.tiles)),
      residency_(pool, telemetry_),
      queue_(pool.name()) {}

// queue_ drains first, then residency_ leaves the pool, then the frames go.
EmulatorDriver::~EmulatorDriver() = default;

FrameResidency::Evict EmulatorDriver::evict_to_host(const std::shared_ptr<Frame>& frame) {
  return [this, weak = std::weak_ptr<Frame>(frame)] {
    auto f = weak.lock();
    if (!f) return;  // unloaded, about to leave residency_
    std::lock_guard<std::mutex> lock(mu_);
    // Write back the current bytes (a frame is always treated as dirty).
    // Only heap memory is allocated here: allocating from the pool could
    // re-enter the pool's pressure callback.
    f->host = std::make_shared<const Storage>(copy(*f, f->storage, nullptr));
    f->storage = Storage{};  // its pool block goes back to the pool
  };
}

EmulatorDriver::Storage EmulatorDriver::copy(const Frame& f, const Storage& from, FabricPool* to) const {
  Storage s;
  if (!f.weights) {
    s.raw = FrameBuffer(f.bytes, to);
    std::memcpy(s.raw.data(), from.raw.data(), f.bytes);
  } else if (engine_ == Engine::Reference) {
    const LaneMajorFrame& lm = from.lane_major;
    s.lane_major = LaneMajorFrame::from_bytes(lm.data(), lm.size(), f.rows, f.cols, lm.tiles(), to);
  } else {
    // FastFrame cannot adopt bytes, so its codes are rebuilt from the trits:
    // deterministic, hence the same bytes (a copy_to(pool) on FastFrame
    // would make this a memcpy).
    s.fast = FastFrame::from_trits(from.fast.to_trits().data(), f.rows, f.cols, from.fast.tiles(), to);
  }
  return s;
}

uint64_t EmulatorDriver::add(std::shared_ptr<Frame> frame) {
  const uint64_t offset = static_cast<uint64_t>(frame->storage.data() - pool_.base());
  const uint64_t capacity = pool_.capacity();
  // Not yet reachable by handle, so nothing uses it before residency_ knows it.
  frame->id = residency_.add(pool_.block_size(frame->storage.data()), (frame->flags & kFlagPinned) != 0,
                             evict_to_host(frame));
  {
    std::lock_guard<std::mutex> lock(mu_);
    // The pool offset names the frame, unless it is already the handle of a
    // frame that was evicted (or reloaded elsewhere): then the next free
    // aligned address from which the frame's span still fits in the pool.
    uint64_t handle = offset;
    for (uint64_t tries = 0; frames_.count(handle) != 0 && tries <= capacity / kBlockAlignment; ++tries) {
      handle += kBlockAlignment;
      if (handle + frame->span > capacity) handle = 0;
    }
    if (frames_.count(handle) == 0) {
      frames_[handle] = std::move(frame);
      return handle;
    }
  }
  residency_.remove(frame->id);
  throw FabricError(Status::ErrAddr, "load: every base address of " + pool_.name() + " names a frame; unload some");
}

uint64_t EmulatorDriver::load_frame(const void* packed, size_t bytes, uint32_t flags) {
  if (bytes == 0) throw std::invalid_argument("load_frame: bytes=0; a frame holds at least one byte");
  auto f = std::make_shared<Frame>();
  f->flags = flags;
  f->bytes = f->span = bytes;
  f->storage.raw = FrameBuffer(bytes, &pool_);  // mu_ not held: this may run the pressure handler
  std::memcpy(f->storage.raw.data(), packed, bytes);
  return add(std::move(f));
}

uint64_t EmulatorDriver::load_weights(const int8_t* trits, int64_t rows, int64_t cols, uint32_t flags) {
  if (rows < 1 || cols < 1)
    throw std::invalid_argument("load_weights: rows=" + std::to_string(rows) + ", cols=" + std::to_string(cols) +
                                "; both must be >= 1");
  auto f = std::make_shared<Frame>();
  f->flags = flags;
  f->weights = true;
  f->rows = rows;
  f->cols = cols;
  f->span = pt5::packed_size(static_cast<size_t>(rows * cols));  // what a TGEMM TFD names
  const int tiles = static_cast<int>(config_.tiles);
  if (engine_ == Engine::Reference) {
    f->storage.lane_major = LaneMajorFrame::from_trits(trits, rows, cols, tiles, &pool_);
  } else {
    f->storage.fast = FastFrame::from_trits(trits, rows, cols, tiles, &pool_);
  }
  return add(std::move(f));
}

void EmulatorDriver::unload(uint64_t base_addr) {
  std::shared_ptr<Frame> frame;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = frames_.find(base_addr);
    if (it == frames_.end())
      throw FabricError(Status::ErrAddr, "unload: no frame is loaded at base_addr=" + hex(base_addr));
    frame = std::move(it->second);
    frames_.erase(it);
  }
  residency_.remove(frame->id);
}

uint32_t EmulatorDriver::frame_flags(uint64_t base_addr) const { return find(base_addr, "base_addr")->flags; }

bool EmulatorDriver::is_resident(uint64_t base_addr) const {
  return residency_.is_resident(find(base_addr, "base_addr")->id);
}

std::vector<uint8_t> EmulatorDriver::frame_bytes(uint64_t base_addr) const {
  auto f = find(base_addr, "base_addr");
  std::lock_guard<std::mutex> lock(mu_);  // eviction swaps storage under it
  const Storage& s = f->host ? *f->host : f->storage;
  return std::vector<uint8_t>(s.data(), s.data() + s.size());
}

EmulatorDriver::Pinned EmulatorDriver::use(const std::shared_ptr<Frame>& f, const char* what, uint64_t addr) {
  auto in_use = std::make_shared<FrameResidency::Use>(residency_.use(f->id));
  // The frame stays resident, and alive, while any copy of the pin lives.
  Pinned pinned(f.get(), [f, in_use](const Frame*) {});
  if (in_use->hit()) return pinned;
  std::shared_ptr<const Storage> host;
  {
    std::lock_guard<std::mutex> lock(mu_);
    host = f->host;
  }
  if (!host) return pinned;  // a concurrent submit reloaded it first
  // Reload outside mu_ (the allocation may run the pool's pressure
  // callbacks). The use keeps this frame from being chosen, and `host`
  // stays valid. The pool gives up after a few callback rounds, and under
  // contention other threads may take the blocks freed for us each round:
  // so try again while something is still evictable (a bounded number of
  // times).
  Storage reloaded;
  for (int attempt = 1;; ++attempt) {
    try {
      reloaded = copy(*f, *host, &pool_);
      break;
    } catch (const OutOfMemory& e) {
      if (attempt < kReloadAttempts && residency_.has_evictable()) continue;
      throw OutOfMemory(std::string(what) + "=" + hex(addr) + ": cannot reload the evicted frame (" +
                            std::to_string(host->size()) + " bytes) into " + pool_.name() + ": " + e.what(),
                        e.requested);
    }
  }
  size_t bytes = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (f->host) {  // else a concurrent submit reloaded it first; ours is freed
      f->storage = std::move(reloaded);
      f->host.reset();
    }
    bytes = pool_.block_size(f->storage.data());
  }
  residency_.set_resident(f->id, bytes);
  return pinned;
}

std::shared_ptr<EmulatorDriver::Frame> EmulatorDriver::find(uint64_t addr, const char* what) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = frames_.find(addr);
  if (it == frames_.end()) fail(Status::ErrAddr, std::string(what) + "=" + hex(addr) + " is not the start of a loaded frame");
  return it->second;
}

TaskId EmulatorDriver::submit(const Tfd& tfd, const KernelArgs& args) {
  check_tfd(tfd, AddressRange{0, pool_.capacity()}, config_);
  const Kernel kernel = tfd.kernel();
  if (kernel == Kernel::Nop) return queue_.submit([] {});
  const uint32_t all_tiles = config_.tiles >= 8 ? 0xFF : (1u << config_.tiles) - 1;
  if (tfd.tile_mask != 0 && tfd.tile_mask != all_tiles)
    fail(Status::ErrInvalid, "tile_mask=" + hex(tfd.tile_mask) + " selects a subset of the tiles; the emulator runs "
                             "every frame on all tiles (use 0 or " + hex(all_tiles) + ")");
  if (!tfd.has_flag(kFlagRead))
    fail(Status::ErrInvalid, "flags=" + hex(tfd.flags) + " lack READ; kernel " + kernel_name(kernel) +
                             " reads its frame");
  auto a = find(tfd.base_addr, "base_addr");

  if (kernel == Kernel::Tgemm) {
    if (!a->weights) fail(Status::ErrInvalid, "base_addr=" + hex(tfd.base_addr) + " is not a weight frame (TGEMM)");
    if (tfd.packing_fmt != static_cast<uint16_t>(Packing::Pt5))
      fail(Status::ErrPack, "packing_fmt=" + hex(tfd.packing_fmt) + " for TGEMM; weight frames are PT-5 (0x01)");
    if (static_cast<int64_t>(tfd.frame_len) != a->rows * a->cols)
      fail(Status::ErrInvalid, "frame_len=" + std::to_string(tfd.frame_len) + " does not match the weight frame (" +
                               std::to_string(a->rows) + " x " + std::to_string(a->cols) + " = " +
                               std::to_string(a->rows * a->cols) + " trits)");
    if (args.batch < 0) throw std::invalid_argument("TGEMM: batch=" + std::to_string(args.batch) + " must be >= 0");
    if (args.batch > 0 && (args.x == nullptr || args.y == nullptr))
      throw std::invalid_argument("TGEMM: x and y must not be null when batch > 0");
    Pinned w = use(a, "base_addr", tfd.base_addr);
    return queue_.submit([this, w, args] { telemetry_.record(run_tgemm(*w, args)); });
  }

  if (kernel == Kernel::Dot || kernel == Kernel::Add || kernel == Kernel::Mul) {
    auto b = find(args.b_addr, "b_addr");
    const uint64_t bytes = packed_frame_bytes(tfd.packing_fmt, tfd.frame_len);
    for (const auto& [frame, name, addr] : {std::tuple{a.get(), "base_addr", tfd.base_addr},
                                            std::tuple{b.get(), "b_addr", args.b_addr}}) {
      if (frame->weights || frame->bytes < bytes)
        fail(Status::ErrAddr, std::string(name) + "=" + hex(addr) + ": frame_len=" + std::to_string(tfd.frame_len) +
                              " needs " + std::to_string(bytes) + " bytes of packed trits; the frame there holds " +
                              (frame->weights ? "a weight matrix" : std::to_string(frame->bytes) + " bytes"));
    }
    if (args.out == nullptr) throw std::invalid_argument(std::string(kernel_name(kernel)) + ": out must not be null");
    Pinned pa = use(a, "base_addr", tfd.base_addr);
    Pinned pb = use(b, "b_addr", args.b_addr);
    return queue_.submit([this, tfd, pa, pb, out = args.out] { telemetry_.record(run_elementwise(tfd, *pa, *pb, out)); });
  }
  fail(Status::ErrInvalid, std::string("kernel ") + kernel_name(kernel) + " (id " +
                           std::to_string(static_cast<int>(kernel)) + ") is not implemented by the emulator");
}

OpCounters EmulatorDriver::run_tgemm(const Frame& w, const KernelArgs& args) const {
  const Storage& s = w.storage;  // resident: the task has w in use
  const bool ref = engine_ == Engine::Reference;
  return fabric::run_tgemm(ref ? nullptr : &fast_, &s.fast, &s.lane_major, args.activation, args.x, args.batch,
                           args.y);
}

OpCounters EmulatorDriver::run_elementwise(const Tfd& tfd, const Frame& a, const Frame& b, void* out) const {
  const int64_t n = tfd.frame_len;
  const int tiles = static_cast<int>(config_.tiles);
  const std::vector<uint8_t> pa = as_pt5(a.storage.raw.data(), tfd.packing_fmt, n);  // both pinned
  const std::vector<uint8_t> pb = as_pt5(b.storage.raw.data(), tfd.packing_fmt, n);
  const bool ref = engine_ == Engine::Reference;
  if (tfd.kernel() == Kernel::Dot) {
    auto* result = static_cast<int64_t*>(out);
    return ref ? reference::dot(pa.data(), pb.data(), n, tiles, result) : fast_.dot(pa.data(), pb.data(), n, tiles, result);
  }
  std::vector<uint8_t> packed(pa.size());
  const OpCounters c = tfd.kernel() == Kernel::Add
                           ? (ref ? reference::add(pa.data(), pb.data(), n, tiles, packed.data())
                                  : fast_.add(pa.data(), pb.data(), n, tiles, packed.data()))
                           : (ref ? reference::mul(pa.data(), pb.data(), n, tiles, packed.data())
                                  : fast_.mul(pa.data(), pb.data(), n, tiles, packed.data()));
  if (tfd.packing_fmt == static_cast<uint16_t>(Packing::Pt5)) {
    std::memcpy(out, packed.data(), packed.size());
  } else {  // results in the TFD's packing
    std::vector<int8_t> trits(static_cast<size_t>(n));
    pt5::decode(packed.data(), trits.size(), trits.data());
    t2b::encode(trits.data(), trits.size(), static_cast<uint8_t*>(out));
  }
  return c;
}

}  // namespace tfmbs::fabric
