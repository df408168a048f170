// Trilinear pull-back warps: a volume sampled at x + u(x) (dense displacement) or at A x + b
// (voxel-space affine, evaluated per voxel so no dense grid is ever materialised).
//
// The per-voxel pieces are REGRISK_HD inline functions so that warpCUDA.cu reuses them; this
// header includes nothing beyond the shared sampler (no pybind11, OpenMP or STL containers).
#pragma once

#include "common/sampling.h"

namespace regrisk {

// y = A x + b for a row-major 3x4 voxel-space matrix; coordinates ordered (i, j, k).
template <typename T>
REGRISK_HD void affine_point(const float* A, T z, T y, T x, T& oz, T& oy, T& ox) {
  oz = static_cast<T>(A[0]) * z + static_cast<T>(A[1]) * y + static_cast<T>(A[2]) * x +
       static_cast<T>(A[3]);
  oy = static_cast<T>(A[4]) * z + static_cast<T>(A[5]) * y + static_cast<T>(A[6]) * x +
       static_cast<T>(A[7]);
  ox = static_cast<T>(A[8]) * z + static_cast<T>(A[9]) * y + static_cast<T>(A[10]) * x +
       static_cast<T>(A[11]);
}

// Trilinear weights at one sample point, computed once and applied to several channels.
// `interior`: all 8 corners lie inside the volume; then value(ch) = sum_c w[c] * ch[offset + off_c].
// The weights are formed as in sample_trilinear (w = (wz * wy) * wx); the sum is pairwise, so
// values can differ from sample_trilinear's chained sum in the last bit (never with the thread
// count). A zero-weight corner adds an exact 0, so integer coordinates return the voxel value
// exactly. Points that are not interior (or NaN) go through sample_trilinear.
template <typename T>
struct TrilinearPoint {
  bool interior;
  int64_t offset, sy, sz;
  T w[8];

  REGRISK_HD TrilinearPoint(Grid3 g, T z, T y, T x) : interior(false), offset(0), sy(g.w), sz(g.h * g.w) {
    // Comparisons are false for NaN, which therefore takes the general path.
    if (z >= T(0) && y >= T(0) && x >= T(0) && z < static_cast<T>(g.d - 1) &&
        y < static_cast<T>(g.h - 1) && x < static_cast<T>(g.w - 1)) {
      interior = true;
      const int64_t z0 = static_cast<int64_t>(z), y0 = static_cast<int64_t>(y),
                    x0 = static_cast<int64_t>(x);
      const T fz = z - static_cast<T>(z0), fy = y - static_cast<T>(y0),
              fx = x - static_cast<T>(x0);
      const T gz = T(1) - fz, gy = T(1) - fy, gx = T(1) - fx;
      offset = (z0 * g.h + y0) * g.w + x0;
      const T w00 = gz * gy, w01 = gz * fy, w10 = fz * gy, w11 = fz * fy;
      w[0] = w00 * gx; w[1] = w00 * fx; w[2] = w01 * gx; w[3] = w01 * fx;
      w[4] = w10 * gx; w[5] = w10 * fx; w[6] = w11 * gx; w[7] = w11 * fx;
    }
  }

  // Interior points only. A pairwise sum: the 8 products are independent, so the adds form a
  // tree of depth 3 instead of a chain of 8 (the chain's latency bounded the CPU loop).
  REGRISK_HD T apply(const T* vol) const {
    const T* p = vol + offset;
    const T a = w[0] * p[0] + w[1] * p[1], b = w[2] * p[sy] + w[3] * p[sy + 1];
    const T c = w[4] * p[sz] + w[5] * p[sz + 1], d = w[6] * p[sz + sy] + w[7] * p[sz + sy + 1];
    return (a + b) + (c + d);
  }
};

// Index of the input volume a batch item reads: one shared source (Bv == 1) or its own.
REGRISK_HD int64_t broadcast_index(int64_t b, int64_t n) { return n == 1 ? 0 : b; }

namespace cpu {
// `threads`: OpenMP team size (>= 1); each output element is computed by one thread in a
// fixed order, so results do not depend on it.

// OpenMP team for `work` elements: small calls run on one thread (waking a team costs more
// than it saves, and far more on a loaded machine). Results never depend on the team size.
inline int team_for(int threads, int64_t work) { return work < (int64_t(1) << 15) ? 1 : threads; }

// Points sampled per call of sample_points (the scratch of one call stays in L1).
constexpr int kChunk = 64;

// Samples C channels (channel c at vol + c * cstride) at n <= kChunk points (z, y, x);
// out[c * ostride + p]. Interior points are done in two passes (weights for all points, in a
// loop the compiler vectorises; then the 8-corner gathers); others go through
// sample_trilinear. Values equal TrilinearPoint's bit for bit.
void sample_points(const float* vol, int64_t C, int64_t cstride, Grid3 g, const float* z,
                   const float* y, const float* x, int n, float* out, int64_t ostride,
                   Boundary mode, float fill);

// out[b, c] = volume[b or 0, c] sampled at x + disp[b](x), for every voxel x of disp's grid.
// volume (Bv, C, in), disp (B, 3, out_grid), out (B, C, out_grid); Bv is 1 or B.
void warp_displacement(const float* volume, int64_t Bv, int64_t C, Grid3 in, const float* disp,
                       int64_t B, Grid3 out_grid, float* out, float fill, Boundary mode, int threads);

// out[b, c] = volume[b or 0, c] sampled at A_b x + t_b; affine (B, 3, 4), out (B, C, out_grid).
void warp_affine(const float* volume, int64_t Bv, int64_t C, Grid3 in, const float* affine,
                 int64_t B, Grid3 out_grid, float* out, float fill, Boundary mode, int threads);

}  // namespace cpu
}  // namespace regrisk
