// The tfmbs devices of this process: how many there are, which is current
// on this thread, and the fabric each owns (its pool and its telemetry).
// Configuration comes from the environment once, at initialisation.
#pragma once

#include <c10/core/Device.h>

#include "fabric/fabric_config.h"
#include "fabric/fabric_pool.h"
#include "fabric/fast_engine.h"
#include "fabric/frame_residency.h"
#include "fabric/telemetry.h"

namespace tfmbs {

// Reads TFMBS_NUM_FABRICS / TFMBS_MEMORY (throws a c10::ValueError naming
// the variable on a bad value). Idempotent; everything below calls it.
void init_devices();

c10::DeviceIndex device_count() noexcept;
c10::DeviceIndex current_device();
// Indices are taken wide (as Python passes them) so that none wraps around
// into a valid c10::DeviceIndex.
void set_current_device(int64_t index);
// Throws an IndexError naming `index` and the valid range.
void check_device_index(int64_t index);
// Resolves -1 (the current device) and validates.
c10::DeviceIndex resolve_device(int64_t index);

fabric::FabricPool& device_pool(c10::DeviceIndex index);
fabric::Telemetry& device_telemetry(c10::DeviceIndex index);
// Which frames of the device's pool are resident (counted in its telemetry).
fabric::FrameResidency& device_residency(c10::DeviceIndex index);
// The fabric model every device follows (tiles, clock, engine threads...).
const fabric::FabricConfig& fabric_config();
// The fast engine the devices run fabric ops on (one, shared: the host's
// cores are shared too), with TFMBS_THREADS threads of torch's OpenMP team
// (OpenMPTeam.h), or of its own pool with TFMBS_THREAD_POOL=own.
fabric::FastEngine& fast_engine();
// True in a child process forked after the parent put data in a pool or
// queued work on a stream: the child's pool is a copy-on-write snapshot
// that the parent never sees, and the engine's and streams' threads did not
// survive the fork.
bool in_bad_fork();
// Throws CUDA's error for this case: tfmbs cannot be used after fork.
void check_not_forked();

// The device whose pool holds `ptr`, or -1.
c10::DeviceIndex device_of_pointer(const void* ptr);

}  // namespace tfmbs
