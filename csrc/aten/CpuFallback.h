// Ops without a tfmbs kernel run PyTorch's CPU kernel on zero-copy CPU views
// of the device tensors; what the kernel allocates lands in the device pool
// (PoolCapture), so results stay on the device without a copy. Every call is
// counted per op name.
#pragma once

#include <cstdint>
#include <map>
#include <string>

namespace tfmbs {

enum class FallbackMode { Allow, Warn, Error };

// Parses "allow" | "warn" | "error" (throws a ValueError naming `source`).
FallbackMode parse_fallback_mode(const std::string& text, const std::string& source);
void set_fallback_mode(FallbackMode mode);
// Sets the mode from `source` (an environment variable). A bad value throws
// here and again at every fallback call until a valid mode is set.
void set_fallback_mode_from_env(const std::string& text, const std::string& source);
FallbackMode fallback_mode();

// Once, at initialisation: ops that would run a composite decomposition on
// tfmbs run their CPU kernel through the fallback instead.
void route_composite_ops_to_cpu_kernels();

std::map<std::string, int64_t> fallback_stats();
void reset_fallback_stats();

}  // namespace tfmbs
