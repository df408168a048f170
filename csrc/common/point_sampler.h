// The CPU kernels' trilinear sampler: a row of an output grid is sampled in chunks of kChunk
// points, the interior points in a vectorised two-pass scheme. Host-only; warp and compose use it.
#pragma once

#include <cstdint>

#include "common/parallel.h"
#include "common/sampling.h"

namespace regrisk {
namespace cpu {

// Points sampled per call of sample_points (the scratch of one call stays in L1).
constexpr int kChunk = 64;

// Samples C channels (channel c at vol + c * cstride) at n <= kChunk points (z, y, x);
// out[c * ostride + p]. Interior points are done in two passes (trilinear_weights for all
// points, in a loop the compiler vectorises; then trilinear_interior); others go through
// sample_trilinear.
void sample_points(const float* vol, int64_t C, int64_t cstride, Grid3 g, const float* z,
                   const float* y, const float* x, int n, float* out, int64_t ostride,
                   Boundary mode, float fill);

// Whether sample_points takes the AVX-512 gather path here (built in, and this CPU has AVX-512F).
bool gather_sampling();

// f(k0, n) for the chunks [k0, k0 + n) of a row of w points. Dimensions are < 2^31 (checked by
// the bindings): int counters convert to float in SIMD.
template <class F>
REGRISK_ALWAYS_INLINE void for_each_chunk(int64_t w, F&& f) {
  for (int k0 = 0; k0 < static_cast<int>(w); k0 += kChunk) {
    f(k0, static_cast<int>(w) - k0 < kChunk ? static_cast<int>(w) - k0 : kChunk);
  }
}

// The points x + u(x) of the chunk [k0, k0 + n) of row (i, j): u points at the row's first
// value of component 0; components are `cstride` apart.
REGRISK_ALWAYS_INLINE void displaced_points(const float* __restrict u, int64_t cstride, float i,
                                            float j, int k0, int n, float* __restrict z,
                                            float* __restrict y, float* __restrict x) {
#pragma omp simd
  for (int p = 0; p < n; ++p) {
    z[p] = i + u[k0 + p];
    y[p] = j + u[cstride + k0 + p];
    x[p] = static_cast<float>(k0 + p) + u[2 * cstride + k0 + p];
  }
}

}  // namespace cpu
}  // namespace regrisk
