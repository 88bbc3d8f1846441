#include "device/OpenMPTeam.h"

#include <ATen/Parallel.h>
#include <omp.h>

namespace tfmbs {
namespace {

int team_size() {
  // OpenMP's team size is per thread: a thread new to torch (a stream's
  // worker) takes torch.set_num_threads's value first, as ATen's
  // parallel_for does.
  at::internal::lazy_init_num_threads();
  return omp_in_parallel() ? 1 : omp_get_max_threads();
}

void run_team(int n, void (*body)(void*, int), void* ctx) {
#pragma omp parallel num_threads(n)
  {
    // A nested region (or a smaller team than asked) gets fewer threads:
    // each serves its share of the participants.
    const int threads = omp_get_num_threads();
    for (int p = omp_get_thread_num(); p < n; p += threads) body(ctx, p);
  }
}

}  // namespace

fabric::ThreadPool::Team openmp_team() { return {&team_size, &run_team}; }

}  // namespace tfmbs
