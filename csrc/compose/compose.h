// Composition of a predicted displacement with a perturbation: the sample's estimate of the
// original map, g = tau o phi, on the displacement's grid.
//   affine tau:  u_g(x) = A (x + u(x)) + b - x            (exact)
//   dense tau:   u_g(x) = u(x) + d(x + u(x))               (trilinear sample of d)
//
// Arrays: disp (B, 3, D, H, W); affine (Ba, 3, 4) or field (Bf, 3, d, h, w) on the source grid,
// Ba and Bf 1 or B; out (B, 3, D, H, W). Checked by compose/checks.h before either build runs.
#pragma once

#include "common/array.h"
#include "common/boundary.h"
#include "common/execution.h"
#include "common/grid.h"

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

// Each op in two builds, picked by the last argument: Threads runs the C++/OpenMP build
// (compose.cpp), Stream enqueues the CUDA build (composeCUDA.cu; arrays in device memory).
void compose_affine(const Array& disp, const Array& affine, const Array& out, Threads threads);
void compose_affine(const Array& disp, const Array& affine, const Array& out, Stream stream);

void compose_field(const Array& disp, const Array& field, const Array& out, float fill,
                   Boundary mode, Threads threads);
void compose_field(const Array& disp, const Array& field, const Array& out, float fill,
                   Boundary mode, Stream stream);

}  // namespace regrisk
