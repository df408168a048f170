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

// Interior fast path of trilinear sampling, for points whose 8 corners all lie inside the
// volume (0 <= coordinate < n - 1 on every axis), in two steps. First the 8 weights from the
// fractional parts, formed as in sample_trilinear (w = (wz * wy) * wx, corners z-major), stored
// at w[k * stride], k = 0..7 (stride 1 for a plain array of 8) ...
template <typename T>
REGRISK_HD void trilinear_weights(T fz, T fy, T fx, T* w, int stride = 1) {
  const T gz = T(1) - fz, gy = T(1) - fy, gx = T(1) - fx;
  const T w00 = gz * gy, w01 = gz * fy, w10 = fz * gy, w11 = fz * fy;
  w[0 * stride] = w00 * gx;
  w[1 * stride] = w00 * fx;
  w[2 * stride] = w01 * gx;
  w[3 * stride] = w01 * fx;
  w[4 * stride] = w10 * gx;
  w[5 * stride] = w10 * fx;
  w[6 * stride] = w11 * gx;
  w[7 * stride] = w11 * fx;
}

// ... and the weighted sum at the corner block starting at p (row stride sy, slice stride sz).
// Pairwise: the 8 products are independent and the adds form a tree of depth 3 rather than a
// chain of 8. It can differ from sample_trilinear's chained sum in the last bit (never with the
// thread count); a zero weight adds an exact 0, so integer coordinates return voxel values exactly.
template <typename T>
REGRISK_HD T trilinear_interior(const T* p, int64_t sy, int64_t sz, const T* w, int stride = 1) {
  const T a = w[0] * p[0] + w[stride] * p[1];
  const T b = w[2 * stride] * p[sy] + w[3 * stride] * p[sy + 1];
  const T c = w[4 * stride] * p[sz] + w[5 * stride] * p[sz + 1];
  const T d = w[6 * stride] * p[sz + sy] + w[7 * stride] * p[sz + sy + 1];
  return (a + b) + (c + d);
}

// Index of the input volume a batch item reads: one shared source (Bv == 1) or its own.
REGRISK_HD int64_t broadcast_index(int64_t b, int64_t n) { return n == 1 ? 0 : b; }

#if !defined(__CUDACC__)
// Host-only declarations of the C++/OpenMP kernels. `threads` is the OpenMP team size (>= 1);
// each output element is computed whole by one thread, so results do not depend on it.
namespace cpu {

// A hot CPU loop marked with this is also built for AVX2 and picked at load time (GCC/Clang
// function multiversioning); "avx2" alone enables no FMA, so both builds round identically.
// Used where it measured faster: the Welford update and one-channel sampling.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define REGRISK_CPU_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define REGRISK_CPU_CLONES
#endif

// OpenMP team for `work` elements: small calls run on one thread (waking a team costs more
// than it saves, and far more on a loaded machine). Results never depend on the team size.
inline int team_for(int threads, int64_t work) { return work < (int64_t(1) << 15) ? 1 : threads; }

// Loop iterations per dynamically scheduled chunk when each iteration covers `per` elements:
// about 16k elements, so a thread that the OS delays (2 cores shared with other work) leaves
// its share to the others instead of stalling the call. Every output element is still computed
// whole by one thread with the same operations, so results do not depend on the schedule.
inline int64_t chunk_for(int64_t per) { return per >= 16384 ? 1 : 16384 / (per > 0 ? per : 1); }

// Points sampled per call of sample_points (the scratch of one call stays in L1).
constexpr int kChunk = 64;

// Samples C channels (channel c at vol + c * cstride) at n <= kChunk points (z, y, x);
// out[c * ostride + p]. Interior points are done in two passes (trilinear_weights for all
// points, in a loop the compiler vectorises; then trilinear_interior); others go through
// sample_trilinear.
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
#endif  // !__CUDACC__
}  // namespace regrisk
