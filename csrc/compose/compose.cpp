// CPU (OpenMP) composition of a displacement with an affine or a dense perturbation.
// Static schedule over rows; each output value has one fixed computation (thread-count
// independent results).
#include "compose/compose.h"

namespace regrisk {
namespace cpu {

void compose_affine(const float* disp, int64_t B, Grid3 g, const float* affine, int64_t Ba,
                    float* out, int threads) {
  const int64_t n = g.size(), rows = B * g.d * g.h;
#pragma omp parallel for schedule(static) num_threads(team_for(threads, B * n))
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t b = r / (g.d * g.h), i = (r / g.h) % g.d, j = r % g.h;
    const float* A = affine + broadcast_index(b, Ba) * 12;
    const float* u = disp + b * 3 * n;
    float* o = out + b * 3 * n;
    const int64_t row = (i * g.h + j) * g.w;
    for (int64_t k = 0; k < g.w; ++k) {
      const int64_t v = row + k;
      double gz, gy, gx;
      compose_affine_voxel<double>(A, static_cast<double>(i), static_cast<double>(j),
                                   static_cast<double>(k), u[v], u[n + v], u[2 * n + v], gz, gy,
                                   gx);
      o[v] = static_cast<float>(gz);
      o[n + v] = static_cast<float>(gy);
      o[2 * n + v] = static_cast<float>(gx);
    }
  }
}

void compose_field(const float* disp, int64_t B, Grid3 g, const float* field, int64_t Bf,
                   Grid3 fg, float* out, float fill, Boundary mode, int threads) {
  const int64_t n = g.size(), nf = fg.size(), rows = B * g.d * g.h;
#pragma omp parallel for schedule(static) num_threads(team_for(threads, B * n))
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t b = r / (g.d * g.h), i = (r / g.h) % g.d, j = r % g.h;
    const int64_t row = (i * g.h + j) * g.w;
    const float* u = disp + b * 3 * n + row;
    const float* d = field + broadcast_index(b, Bf) * 3 * nf;
    float* o = out + b * 3 * n + row;
    float z[kChunk], y[kChunk], x[kChunk];
    for (int64_t k0 = 0; k0 < g.w; k0 += kChunk) {
      const int m = static_cast<int>(g.w - k0 < kChunk ? g.w - k0 : kChunk);
      for (int p = 0; p < m; ++p) {
        z[p] = static_cast<float>(i) + u[k0 + p];
        y[p] = static_cast<float>(j) + u[n + k0 + p];
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
