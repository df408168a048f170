// Composition of a predicted displacement with a perturbation: the sample's estimate of the
// original map, g = tau o phi, on the displacement's grid.
//   affine tau:  u_g(x) = A (x + u(x)) + b - x            (exact)
//   dense tau:   u_g(x) = u(x) + d(x + u(x))               (trilinear sample of d)
//
// Per-voxel steps are REGRISK_HD inline so composeCUDA.cu reuses them; no pybind11, OpenMP or
// STL containers here.
#pragma once

#include "common/sampling.h"
#include "warp/warp.h"

namespace regrisk {

// u_g = A p + b - x with p = x + u, written as (A - I) p + b + u: the large coordinate
// terms cancel before rounding instead of after, which keeps float32 error at the level of u.
template <typename T>
REGRISK_HD void compose_affine_voxel(const float* A, T z, T y, T x, T uz, T uy, T ux, T& gz,
                                     T& gy, T& gx) {
  const T pz = z + uz, py = y + uy, px = x + ux;
  gz = (static_cast<T>(A[0]) - T(1)) * pz + static_cast<T>(A[1]) * py +
       static_cast<T>(A[2]) * px + static_cast<T>(A[3]) + uz;
  gy = static_cast<T>(A[4]) * pz + (static_cast<T>(A[5]) - T(1)) * py +
       static_cast<T>(A[6]) * px + static_cast<T>(A[7]) + uy;
  gx = static_cast<T>(A[8]) * pz + static_cast<T>(A[9]) * py +
       (static_cast<T>(A[10]) - T(1)) * px + static_cast<T>(A[11]) + ux;
}

#if !defined(__CUDACC__)  // host-only: the C++/OpenMP kernels
namespace cpu {

// disp (B, 3, grid), affine (Ba, 3, 4) with Ba 1 or B, out (B, 3, grid).
void compose_affine(const float* disp, int64_t B, Grid3 grid, const float* affine, int64_t Ba,
                    float* out, int threads);

// disp (B, 3, grid), field (Bf, 3, fgrid) with Bf 1 or B, out (B, 3, grid).
void compose_field(const float* disp, int64_t B, Grid3 grid, const float* field, int64_t Bf,
                   Grid3 fgrid, float* out, float fill, Boundary mode, int threads);

}  // namespace cpu
#endif  // !__CUDACC__
}  // namespace regrisk
