#pragma once

namespace tfmbs {
// Once per process, at initialisation: lets Module.to("tfmbs") keep
// Parameter identity.
void register_shallow_copy_override();
}  // namespace tfmbs
