// CPU (OpenMP) composition of a displacement with an affine or a dense perturbation.
// Rows are dynamically scheduled in chunks (chunk_for); each output value has one fixed
// computation, so results do not depend on the thread count.
#include "compose/compose.h"

namespace regrisk {
namespace cpu {

void compose_affine(const float* disp, int64_t B, Grid3 g, const float* affine, int64_t Ba,
                    float* out, int threads) {
  const int64_t n = g.size(), rows = B * g.d * g.h;
#pragma omp parallel for schedule(dynamic, chunk_for(3 * g.w)) \
    num_threads(team_for(threads, B * n))
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t b = r / (g.d * g.h), i = (r / g.h) % g.d, j = r % g.h;
    float A[12];  // a local copy: the outputs cannot alias it
    for (int c = 0; c < 12; ++c) A[c] = affine[broadcast_index(b, Ba) * 12 + c];
    const int64_t row = (i * g.h + j) * g.w;
    const float* __restrict uz = disp + b * 3 * n + row;
    const float* __restrict uy = uz + n;
    const float* __restrict ux = uz + 2 * n;
    float* __restrict oz = out + b * 3 * n + row;
    float* __restrict oy = oz + n;
    float* __restrict ox = oz + 2 * n;
    const double id = static_cast<double>(i), jd = static_cast<double>(j);
    const int w = static_cast<int>(g.w);  // int32 -> double converts in SIMD, int64 does not
#pragma omp simd
    for (int k = 0; k < w; ++k) {
      double gz, gy, gx;
      compose_affine_voxel<double>(A, id, jd, static_cast<double>(k), uz[k], uy[k], ux[k], gz,
                                   gy, gx);
      oz[k] = static_cast<float>(gz);
      oy[k] = static_cast<float>(gy);
      ox[k] = static_cast<float>(gx);
    }
  }
}

void compose_field(const float* disp, int64_t B, Grid3 g, const float* field, int64_t Bf,
                   Grid3 fg, float* out, float fill, Boundary mode, int threads) {
  const int64_t n = g.size(), nf = fg.size(), rows = B * g.d * g.h;
#pragma omp parallel for schedule(dynamic, chunk_for(3 * g.w)) \
    num_threads(team_for(threads, B * n))
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t b = r / (g.d * g.h), i = (r / g.h) % g.d, j = r % g.h;
    const int64_t row = (i * g.h + j) * g.w;
    const float* __restrict u = disp + b * 3 * n + row;
    const float* d = field + broadcast_index(b, Bf) * 3 * nf;
    float* o = out + b * 3 * n + row;
    const float fi = static_cast<float>(i), fj = static_cast<float>(j);
    float z[kChunk], y[kChunk], x[kChunk];
    // Dimensions are < 2^31 (checked by the bindings): int counters convert to float in SIMD.
    for (int k0 = 0; k0 < static_cast<int>(g.w); k0 += kChunk) {
      const int m = static_cast<int>(g.w) - k0 < kChunk ? static_cast<int>(g.w) - k0 : kChunk;
#pragma omp simd
      for (int p = 0; p < m; ++p) {
        z[p] = fi + u[k0 + p];
        y[p] = fj + u[n + k0 + p];
        x[p] = static_cast<float>(k0 + p) + u[2 * n + k0 + p];
      }
      // The three channels of d at x + u(x), written to out, then u added in place.
      sample_points(d, 3, nf, fg, z, y, x, m, o + k0, n, mode, fill);
      for (int c = 0; c < 3; ++c)
        for (int p = 0; p < m; ++p) o[c * n + k0 + p] += u[c * n + k0 + p];
    }
  }
}

}  // namespace cpu
}  // namespace regrisk
