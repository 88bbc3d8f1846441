#include "fabric/telemetry.h"

#include <sstream>
#include <stdexcept>

namespace tfmbs::fabric {

void OpCounters::add(const OpCounters& other) {
  if (other.tiles.size() != tiles.size()) {
    throw std::invalid_argument(
                      "OpCounters::add: tile count mismatch: " + std::to_string(tiles.size()) +
                          " vs " + std::to_string(other.tiles.size()));
  }
  cycles += other.cycles;
  compute_cycles += other.compute_cycles;
  burst_wait_cycles += other.burst_wait_cycles;
  utilization += other.utilization;
  for (size_t t = 0; t < tiles.size(); ++t) {
    for (int l = 0; l < kLanesPerTile; ++l) {
      tiles[t].skips[l] += other.tiles[t].skips[l];
      tiles[t].active_cycles[l] += other.tiles[t].active_cycles[l];
    }
    tiles[t].overflow = tiles[t].overflow || other.tiles[t].overflow;
  }
}

std::array<uint64_t, kLanesPerTile> OpCounters::lane_skips() const {
  std::array<uint64_t, kLanesPerTile> out{};
  for (const auto& t : tiles)
    for (int l = 0; l < kLanesPerTile; ++l) out[l] += t.skips[l];
  return out;
}

std::array<uint64_t, kLanesPerTile> OpCounters::lane_active_cycles() const {
  std::array<uint64_t, kLanesPerTile> out{};
  for (const auto& t : tiles)
    for (int l = 0; l < kLanesPerTile; ++l) out[l] += t.active_cycles[l];
  return out;
}

uint64_t OpCounters::total_skips() const {
  uint64_t s = 0;
  for (auto v : lane_skips()) s += v;
  return s;
}

uint64_t OpCounters::total_active_cycles() const {
  uint64_t s = 0;
  for (auto v : lane_active_cycles()) s += v;
  return s;
}

double OpCounters::zero_skip_ratio() const {
  const uint64_t active = total_active_cycles();
  return active == 0 ? 0.0 : static_cast<double>(total_skips()) / static_cast<double>(active);
}

double OpCounters::utilization_ratio() const {
  const double denom = static_cast<double>(cycles) * static_cast<double>(tiles.size()) * kLanesPerTile;
  return denom == 0 ? 0.0 : static_cast<double>(utilization) / denom;
}

std::string OpCounters::to_string() const {
  std::ostringstream os;
  os << "cycles=" << cycles << " compute=" << compute_cycles << " burst_wait=" << burst_wait_cycles
     << " utilization=" << utilization;
  for (size_t t = 0; t < tiles.size(); ++t) {
    os << "\n tile " << t << (tiles[t].overflow ? " OVERFLOW" : "") << " skips=[";
    for (int l = 0; l < kLanesPerTile; ++l) os << (l ? "," : "") << tiles[t].skips[l];
    os << "] active=[";
    for (int l = 0; l < kLanesPerTile; ++l) os << (l ? "," : "") << tiles[t].active_cycles[l];
    os << "]";
  }
  return os.str();
}

std::string OpCounters::first_difference(const OpCounters& o) const {
  auto num = [](const char* name, uint64_t a, uint64_t b) {
    return std::string(name) + ": " + std::to_string(a) + " vs " + std::to_string(b);
  };
  if (cycles != o.cycles) return num("cycles", cycles, o.cycles);
  if (compute_cycles != o.compute_cycles) return num("compute_cycles", compute_cycles, o.compute_cycles);
  if (burst_wait_cycles != o.burst_wait_cycles)
    return num("burst_wait_cycles", burst_wait_cycles, o.burst_wait_cycles);
  if (utilization != o.utilization) return num("utilization", utilization, o.utilization);
  if (tiles.size() != o.tiles.size()) return num("tiles", tiles.size(), o.tiles.size());
  for (size_t t = 0; t < tiles.size(); ++t) {
    const std::string where = "tile " + std::to_string(t);
    if (tiles[t].overflow != o.tiles[t].overflow)
      return where + " overflow: " + std::to_string(tiles[t].overflow) + " vs " +
             std::to_string(o.tiles[t].overflow);
    for (int l = 0; l < kLanesPerTile; ++l) {
      const std::string lane = where + " lane " + std::to_string(l);
      if (tiles[t].skips[l] != o.tiles[t].skips[l])
        return num((lane + " skips").c_str(), tiles[t].skips[l], o.tiles[t].skips[l]);
      if (tiles[t].active_cycles[l] != o.tiles[t].active_cycles[l])
        return num((lane + " active_cycles").c_str(), tiles[t].active_cycles[l],
                   o.tiles[t].active_cycles[l]);
    }
  }
  return {};
}

Telemetry::Telemetry(int num_tiles) : num_tiles_(num_tiles) {
  if (num_tiles < 1 || num_tiles > 255) {
    throw std::invalid_argument("Telemetry: num_tiles=" + std::to_string(num_tiles) +
                                           " out of range [1, 255]");
  }
  state_.last_op = OpCounters(num_tiles);
  state_.accumulated = OpCounters(num_tiles);
}

void Telemetry::record(const OpCounters& op) {
  std::lock_guard<std::mutex> lock(mutex_);
  state_.accumulated.add(op);  // throws on a tile-count mismatch, before any change
  state_.last_op = op;
  ++state_.host.ops;
}

void Telemetry::add_bytes_h2d(uint64_t n) { std::lock_guard<std::mutex> l(mutex_); state_.host.bytes_h2d += n; }
void Telemetry::add_bytes_d2h(uint64_t n) { std::lock_guard<std::mutex> l(mutex_); state_.host.bytes_d2h += n; }
void Telemetry::add_residency_hit() { std::lock_guard<std::mutex> l(mutex_); ++state_.host.residency_hits; }
void Telemetry::add_residency_miss() { std::lock_guard<std::mutex> l(mutex_); ++state_.host.residency_misses; }
void Telemetry::add_eviction() { std::lock_guard<std::mutex> l(mutex_); ++state_.host.evictions; }
void Telemetry::add_host_op() { host_ops_.fetch_add(1, std::memory_order_relaxed); }
void Telemetry::add_fallback_op() { fallback_ops_.fetch_add(1, std::memory_order_relaxed); }

TelemetrySnapshot Telemetry::snapshot() const {
  std::lock_guard<std::mutex> lock(mutex_);
  TelemetrySnapshot snapshot = state_;
  snapshot.host.host_ops = host_ops_.load(std::memory_order_relaxed);
  snapshot.host.fallback_ops = fallback_ops_.load(std::memory_order_relaxed);
  return snapshot;
}

void Telemetry::reset() {
  std::lock_guard<std::mutex> lock(mutex_);
  state_ = TelemetrySnapshot{};
  state_.last_op = OpCounters(num_tiles_);
  state_.accumulated = OpCounters(num_tiles_);
  host_ops_ = 0;
  fallback_ops_ = 0;
}

}  // namespace tfmbs::fabric
