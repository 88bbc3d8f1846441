#include "device/OpenMPTeam.h"

#include <omp.h>

namespace tfmbs {
namespace {

int team_size() { return omp_in_parallel() ? 1 : omp_get_max_threads(); }

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
