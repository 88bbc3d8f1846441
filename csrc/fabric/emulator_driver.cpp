#include "fabric/emulator_driver.h"

#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "fabric/fabric_pool.h"
#include "fabric/lane_major_frame.h"
#include "fabric/pt5_codec.h"
#include "fabric/reference_engine.h"
#include "fabric/t2b_codec.h"

namespace tfmbs::fabric {

// A loaded frame: raw packed bytes (load_frame) or a weight matrix in the
// layout of the driver's engine (load_weights).
struct EmulatorDriver::Frame {
  uint32_t flags = 0;
  FrameBuffer raw;
  bool weights = false;
  int64_t rows = 0, cols = 0;
  LaneMajorFrame lane_major;  // Engine::Reference
  FastFrame fast;             // Engine::Fast
};

namespace {

std::string hex(uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

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
      queue_(pool.name()) {}

EmulatorDriver::~EmulatorDriver() = default;

uint64_t EmulatorDriver::add(std::shared_ptr<Frame> frame, const uint8_t* data) {
  const uint64_t addr = static_cast<uint64_t>(data - pool_.base());
  std::lock_guard<std::mutex> lock(mu_);
  frames_[addr] = std::move(frame);
  return addr;
}

uint64_t EmulatorDriver::load_frame(const void* packed, size_t bytes, uint32_t flags) {
  if (bytes == 0) throw std::invalid_argument("load_frame: bytes=0; a frame holds at least one byte");
  auto f = std::make_shared<Frame>();
  f->flags = flags;
  f->raw = FrameBuffer(bytes, &pool_);
  std::memcpy(f->raw.data(), packed, bytes);
  const uint8_t* data = f->raw.data();
  return add(std::move(f), data);
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
  const int tiles = static_cast<int>(config_.tiles);
  const uint8_t* data;
  if (engine_ == Engine::Reference) {
    f->lane_major = LaneMajorFrame::from_trits(trits, rows, cols, tiles, &pool_);
    data = f->lane_major.data();
  } else {
    f->fast = FastFrame::from_trits(trits, rows, cols, tiles, &pool_);
    data = f->fast.codes();
  }
  return add(std::move(f), data);
}

void EmulatorDriver::unload(uint64_t base_addr) {
  std::lock_guard<std::mutex> lock(mu_);
  if (frames_.erase(base_addr) == 0)
    throw FabricError(Status::ErrAddr, "unload: no frame is loaded at base_addr=" + hex(base_addr));
}

uint32_t EmulatorDriver::frame_flags(uint64_t base_addr) const { return find(base_addr, "base_addr")->flags; }

std::shared_ptr<const EmulatorDriver::Frame> EmulatorDriver::find(uint64_t addr, const char* what) const {
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
    return queue_.submit([this, a, args] { telemetry_.record(run_tgemm(*a, args)); });
  }

  if (kernel == Kernel::Dot || kernel == Kernel::Add || kernel == Kernel::Mul) {
    auto b = find(args.b_addr, "b_addr");
    const uint64_t bytes = packed_frame_bytes(tfd.packing_fmt, tfd.frame_len);
    for (const auto& [frame, name, addr] : {std::tuple{a.get(), "base_addr", tfd.base_addr},
                                            std::tuple{b.get(), "b_addr", args.b_addr}}) {
      if (frame->weights || frame->raw.size() < bytes)
        fail(Status::ErrAddr, std::string(name) + "=" + hex(addr) + ": frame_len=" + std::to_string(tfd.frame_len) +
                              " needs " + std::to_string(bytes) + " bytes of packed trits; the frame there holds " +
                              (frame->weights ? "a weight matrix" : std::to_string(frame->raw.size()) + " bytes"));
    }
    if (args.out == nullptr) throw std::invalid_argument(std::string(kernel_name(kernel)) + ": out must not be null");
    return queue_.submit([this, tfd, a, b, out = args.out] { telemetry_.record(run_elementwise(tfd, *a, *b, out)); });
  }
  fail(Status::ErrInvalid, std::string("kernel ") + kernel_name(kernel) + " (id " +
                           std::to_string(static_cast<int>(kernel)) + ") is not implemented by the emulator");
}

OpCounters EmulatorDriver::run_tgemm(const Frame& w, const KernelArgs& args) const {
  const bool ref = engine_ == Engine::Reference;
  switch (args.activation) {
    case ActivationKind::Int8: {
      auto x = static_cast<const int8_t*>(args.x);
      auto y = static_cast<int32_t*>(args.y);
      return ref ? reference::tgemm_int8(w.lane_major, x, args.batch, y) : fast_.tgemm_int8(w.fast, x, args.batch, y);
    }
    case ActivationKind::Ternary: {
      auto x = static_cast<const int8_t*>(args.x);
      auto y = static_cast<int32_t*>(args.y);
      return ref ? reference::tgemm_ternary(w.lane_major, x, args.batch, y)
                 : fast_.tgemm_ternary(w.fast, x, args.batch, y);
    }
    case ActivationKind::Fp32: {
      auto x = static_cast<const float*>(args.x);
      auto y = static_cast<float*>(args.y);
      return ref ? reference::tgemm_fp32(w.lane_major, x, args.batch, y) : fast_.tgemm_fp32(w.fast, x, args.batch, y);
    }
  }
  throw std::invalid_argument("TGEMM: unknown activation kind " + std::to_string(static_cast<int>(args.activation)));
}

OpCounters EmulatorDriver::run_elementwise(const Tfd& tfd, const Frame& a, const Frame& b, void* out) const {
  const int64_t n = tfd.frame_len;
  const int tiles = static_cast<int>(config_.tiles);
  const std::vector<uint8_t> pa = as_pt5(a.raw.data(), tfd.packing_fmt, n);
  const std::vector<uint8_t> pb = as_pt5(b.raw.data(), tfd.packing_fmt, n);
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
