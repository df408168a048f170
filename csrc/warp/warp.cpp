// CPU (OpenMP) warps. One parallel loop over output rows (b, i, j) with a static schedule:
// every output value is produced by exactly one thread with the same arithmetic, so the result
// is bitwise identical for any thread count.
#include "warp/warp.h"

namespace regrisk {
namespace cpu {

void warp_displacement(const float* volume, int64_t Bv, int64_t C, Grid3 in, const float* disp,
                       int64_t B, Grid3 og, float* out, float fill, Boundary mode, int threads) {
  const int64_t n_in = in.size(), n_out = og.size(), rows = B * og.d * og.h;
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t b = r / (og.d * og.h), i = (r / og.h) % og.d, j = r % og.h;
    const float* u = disp + b * 3 * n_out;
    const float* vol = volume + broadcast_index(b, Bv) * C * n_in;
    float* o = out + b * C * n_out;
    const int64_t row = (i * og.h + j) * og.w;
    for (int64_t k = 0; k < og.w; ++k) {
      const int64_t v = row + k;
      const float z = static_cast<float>(i) + u[v];
      const float y = static_cast<float>(j) + u[n_out + v];
      const float x = static_cast<float>(k) + u[2 * n_out + v];
      for (int64_t c = 0; c < C; ++c) {
        o[c * n_out + v] = sample_trilinear(vol + c * n_in, in, z, y, x, mode, fill);
      }
    }
  }
}

void warp_affine(const float* volume, int64_t Bv, int64_t C, Grid3 in, const float* affine,
                 int64_t B, Grid3 og, float* out, float fill, Boundary mode, int threads) {
  const int64_t n_in = in.size(), n_out = og.size(), rows = B * og.d * og.h;
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t b = r / (og.d * og.h), i = (r / og.h) % og.d, j = r % og.h;
    const float* A = affine + b * 12;
    const float* vol = volume + broadcast_index(b, Bv) * C * n_in;
    float* o = out + b * C * n_out;
    const int64_t row = (i * og.h + j) * og.w;
    for (int64_t k = 0; k < og.w; ++k) {
      // Double for the coordinate (cheap here), float for the sample as on the GPU.
      double z, y, x;
      affine_point<double>(A, static_cast<double>(i), static_cast<double>(j),
                           static_cast<double>(k), z, y, x);
      for (int64_t c = 0; c < C; ++c) {
        o[c * n_out + row + k] =
            sample_trilinear(vol + c * n_in, in, static_cast<float>(z), static_cast<float>(y),
                             static_cast<float>(x), mode, fill);
      }
    }
  }
}

}  // namespace cpu
}  // namespace regrisk
