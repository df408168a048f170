// CUDA kernels for warp: one thread per output voxel of one batch item; the sample coordinate
// and its trilinear weights are computed once and reused for every channel. Per-voxel math is
// the CPU build's: trilinear_at / trilinear_value (common/sampling.h), affine_point (warp.h).
#include "common/launch.cuh"
#include "common/sampling.h"
#include "warp/warp.h"

namespace regrisk {
namespace cuda {
namespace {

// The displacement (transform = disp) or affine (transform = affine) of batch item bi gives the
// sample point of output voxel (i, j, k), index n of n_out.
struct DisplacedPoint {
  __device__ __forceinline__ void operator()(const float* __restrict__ disp, int64_t bi,
                                             int64_t n, int64_t n_out, float i, float j, float k,
                                             float& z, float& y, float& x) const {
    const float* __restrict__ u = disp + bi * 3 * n_out;
    z = i + u[n];
    y = j + u[n_out + n];
    x = k + u[2 * n_out + n];
  }
};

struct AffinePoint {
  __device__ __forceinline__ void operator()(const float* affine, int64_t bi, int64_t, int64_t,
                                             float i, float j, float k, float& z, float& y,
                                             float& x) const {
    // Coordinate in double, sample in float: the CPU build's arithmetic exactly. The matrix is
    // uniform across the block: served from cache.
    double zd, yd, xd;
    affine_point<double>(affine + bi * 12, i, j, k, zd, yd, xd);
    z = static_cast<float>(zd);
    y = static_cast<float>(yd);
    x = static_cast<float>(xd);
  }
};

template <Boundary M, class Point>
__global__ void __launch_bounds__(kThreads)
    warp_kernel(const float* __restrict__ volume, int64_t bv, int64_t c, Grid3 in,
                const float* __restrict__ transform, int64_t b, Dims32 o,
                float* __restrict__ out, float fill) {
  const int64_t n_out = int64_t(o.d) * o.h * o.w;
  const int64_t n_in = in.size();
  for (int64_t bi = blockIdx.y; bi < b; bi += gridDim.y) {
    const float* __restrict__ vol = volume + broadcast_index(bi, bv) * c * n_in;
    float* __restrict__ dst = out + bi * c * n_out;
    for (int64_t n = first_voxel(); n < n_out; n += voxel_stride()) {
      float i, j, k, z, y, x;
      unravel(static_cast<uint32_t>(n), o, i, j, k);
      Point()(transform, bi, n, n_out, i, j, k, z, y, x);
      const Trilinear t = trilinear_at(in, z, y, x);
      for (int64_t ch = 0; ch < c; ++ch) {
        dst[ch * n_out + n] = trilinear_value(vol + ch * n_in, in, t, z, y, x, M, fill);
      }
    }
  }
}

template <class Point>
void launch_warp(const char* what, const Array& volume, const Array& transform, const Array& out,
                 float fill, Boundary mode, Stream s) {
  const Dims32 o = dims32(out.grid(2), what);
  const int64_t b = out.dim(0);
  with_boundary(mode, [&](auto m) {
    launch(what, s, grid_for(out.grid(2).size(), b), kThreads,
           warp_kernel<decltype(m)::value, Point>, volume.in(), volume.dim(0), volume.dim(1),
           volume.grid(2), transform.in(), b, o, out.out(), fill);
  });
}

}  // namespace
}  // namespace cuda

void warp_displacement(const Array& volume, const Array& disp, const Array& out, float fill,
                       Boundary mode, Stream stream) {
  cuda::launch_warp<cuda::DisplacedPoint>("warp_displacement", volume, disp, out, fill, mode,
                                          stream);
}

void warp_affine(const Array& volume, const Array& affine, const Array& out, float fill,
                 Boundary mode, Stream stream) {
  cuda::launch_warp<cuda::AffinePoint>("warp_affine", volume, affine, out, fill, mode, stream);
}

}  // namespace regrisk
