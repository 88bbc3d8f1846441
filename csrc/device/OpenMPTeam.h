// The fast engine's threads inside torch: torch's intra-op OpenMP team
// (ATen's parallel_for runs on it too), lent to the fabric's pool
// (fabric/thread_pool.h: ThreadPool::use_team), so that torch's threads and
// the engine's never compete for the cores, and the team's post-region
// polling (OMP_WAIT_POLICY) starts an engine call that follows a torch op
// without a wake-up. torch.set_num_threads bounds both; TFMBS_THREADS
// bounds the engine's share.
#pragma once

#include "fabric/thread_pool.h"

namespace tfmbs {

fabric::ThreadPool::Team openmp_team();

}  // namespace tfmbs
