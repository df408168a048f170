// OpenMP plumbing of the CPU kernels: team sizes, schedules, the row and voxel loops, and the
// marker for hot loops that are also built for AVX2. Host-only.
//
// Every loop here hands each output element to exactly one thread, which computes it whole with
// a fixed sequence of operations: results never depend on the team size or the schedule.
#pragma once

#include <cstdint>

#include "common/grid.h"

namespace regrisk {
namespace cpu {

// A hot CPU loop marked with this is also built for AVX2 and picked at load time (GCC/Clang
// function multiversioning); "avx2" alone enables no FMA, so both builds round identically.
// Used where it measured faster: the Welford update and one-channel sampling.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define REGRISK_CPU_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define REGRISK_CPU_CLONES
#endif

#if defined(__GNUC__) || defined(__clang__)
#define REGRISK_ALWAYS_INLINE __attribute__((always_inline)) inline
#else
#define REGRISK_ALWAYS_INLINE inline
#endif

// Largest team a call may ask for (the bindings reject more).
constexpr int kMaxThreads = 4096;

// The team size of calls that pass 0: set by set_default_threads (0 restores OpenMP's own
// default, omp_get_max_threads); 1 without OpenMP.
void set_default_threads(int n);
int default_threads();

// OpenMP team for `work` elements: small calls run on one thread (waking a team costs more
// than it saves, and far more on a loaded machine); otherwise the caller's count, 0 meaning
// the default.
inline int team_for(int threads, int64_t work) {
  if (work < (int64_t(1) << 15)) return 1;
  return threads > 0 ? threads : default_threads();
}

// Loop iterations per dynamically scheduled chunk when each iteration covers `per` elements:
// about 16k elements, so a thread that the OS delays (2 cores shared with other work) leaves
// its share to the others instead of stalling the call.
inline int64_t chunk_for(int64_t per) { return per >= 16384 ? 1 : 16384 / (per > 0 ? per : 1); }

// body(b, i, j) for every row (b, i, j) of a (B, grid) output, `per_row` elements each, in
// parallel over `work` elements in all.
template <class Body>
REGRISK_ALWAYS_INLINE void for_each_row(int64_t B, Grid3 g, int64_t per_row, int64_t work,
                                        int threads, Body&& body) {
  const int64_t rows = B * g.d * g.h;
#pragma omp parallel for schedule(dynamic, chunk_for(per_row)) num_threads(team_for(threads, work))
  for (int64_t r = 0; r < rows; ++r) body(r / (g.d * g.h), (r / g.h) % g.d, r % g.h);
}

// body(v) for every voxel v < N, in parallel (per-voxel work with no cross-voxel state).
template <class Body>
REGRISK_ALWAYS_INLINE void for_each_voxel(int64_t N, int threads, Body&& body) {
#pragma omp parallel for schedule(dynamic, 16384) num_threads(team_for(threads, N))
  for (int64_t v = 0; v < N; ++v) body(v);
}

}  // namespace cpu
}  // namespace regrisk
