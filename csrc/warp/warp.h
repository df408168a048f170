// Trilinear pull-back warps: a volume sampled at x + u(x) (dense displacement) or at A x + b
// (voxel-space affine, evaluated per voxel so no dense grid is ever materialised).
//
// Arrays: volume (Bv, C, D, H, W) with Bv 1 or B; displacement (B, 3, d, h, w) on the output
// grid; affine (B, 3, 4) row-major [A | t] in voxels; out (B, C, d, h, w). Arguments are checked
// by warp/checks.h before either build runs.
#pragma once

#include "common/array.h"
#include "common/boundary.h"
#include "common/execution.h"
#include "common/grid.h"

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

// Each op in two builds, picked by the last argument: Threads runs the C++/OpenMP build
// (warp.cpp), Stream enqueues the CUDA build (warpCUDA.cu; arrays in device memory).

// out[b, c](x) = volume[b or 0, c](x + disp[b](x)).
void warp_displacement(const Array& volume, const Array& disp, const Array& out, float fill,
                       Boundary mode, Threads threads);
void warp_displacement(const Array& volume, const Array& disp, const Array& out, float fill,
                       Boundary mode, Stream stream);

// out[b, c](x) = volume[b or 0, c] at grid[b](x), ONNX GridSample's normalised coordinates
// (grid (B, d, h, w, 3) holds x, y, z in [-1, 1]; align_corners picks the convention). The
// position along each axis is formed as the staged graphs formed it in NumPy before (the
// displacement grid * scale + (centre - x), then x + displacement), so the samples are the same
// bit for bit. CPU only (staged graphs run on CPU backends).
void warp_grid(const Array& volume, const Array& grid, const Array& out, float fill,
               Boundary mode, bool align_corners, Threads threads);

// out[b, c](x) = volume[b or 0, c](A_b x + t_b).
void warp_affine(const Array& volume, const Array& affine, const Array& out, float fill,
                 Boundary mode, Threads threads);
void warp_affine(const Array& volume, const Array& affine, const Array& out, float fill,
                 Boundary mode, Stream stream);

}  // namespace regrisk
