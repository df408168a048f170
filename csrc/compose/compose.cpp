// CPU (OpenMP) composition of a displacement with an affine or a dense perturbation.
// Static schedule over rows; each output value has one fixed computation (thread-count
// independent results).
#include "compose/compose.h"

namespace regrisk {
namespace cpu {

void compose_affine(const float* disp, int64_t B, Grid3 g, const float* affine, int64_t Ba,
                    float* out, int threads) {
  const int64_t n = g.size(), rows = B * g.d * g.h;
#pragma omp parallel for schedule(static) num_threads(threads)
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
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t b = r / (g.d * g.h), i = (r / g.h) % g.d, j = r % g.h;
    const float* u = disp + b * 3 * n;
    const float* d = field + broadcast_index(b, Bf) * 3 * nf;
    float* o = out + b * 3 * n;
    const int64_t row = (i * g.h + j) * g.w;
    for (int64_t k = 0; k < g.w; ++k) {
      const int64_t v = row + k;
      const float uz = u[v], uy = u[n + v], ux = u[2 * n + v];
      const float z = static_cast<float>(i) + uz, y = static_cast<float>(j) + uy,
                  x = static_cast<float>(k) + ux;
      o[v] = uz + sample_trilinear(d, fg, z, y, x, mode, fill);
      o[n + v] = uy + sample_trilinear(d + nf, fg, z, y, x, mode, fill);
      o[2 * n + v] = ux + sample_trilinear(d + 2 * nf, fg, z, y, x, mode, fill);
    }
  }
}

}  // namespace cpu
}  // namespace regrisk
