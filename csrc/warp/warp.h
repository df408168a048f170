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

// Index of the input volume a batch item reads: one shared source (Bv == 1) or its own.
REGRISK_HD int64_t broadcast_index(int64_t b, int64_t n) { return n == 1 ? 0 : b; }

namespace cpu {
// `threads`: OpenMP team size (>= 1); each output element is computed by one thread in a
// fixed order, so results do not depend on it.


// out[b, c] = volume[b or 0, c] sampled at x + disp[b](x), for every voxel x of disp's grid.
// volume (Bv, C, in), disp (B, 3, out_grid), out (B, C, out_grid); Bv is 1 or B.
void warp_displacement(const float* volume, int64_t Bv, int64_t C, Grid3 in, const float* disp,
                       int64_t B, Grid3 out_grid, float* out, float fill, Boundary mode, int threads);

// out[b, c] = volume[b or 0, c] sampled at A_b x + t_b; affine (B, 3, 4), out (B, C, out_grid).
void warp_affine(const float* volume, int64_t Bv, int64_t C, Grid3 in, const float* affine,
                 int64_t B, Grid3 out_grid, float* out, float fill, Boundary mode, int threads);

}  // namespace cpu
}  // namespace regrisk
