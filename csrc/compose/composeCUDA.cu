// CUDA kernels for compose: one thread per voxel of one batch item. Per-voxel math is shared
// with the CPU build: compose_affine_voxel (compose/compose.h), the CPU's per-point trilinear
// sampling (trilinear_at / trilinear_value in warp/warpCUDA.h), broadcast_index (warp/warp.h).
#include <cuda_runtime.h>

#include <cstdint>

#include "common/launch.cuh"
#include "common/sampling.h"
#include "compose/compose.h"
#include "compose/composeCUDA.h"
#include "warp/warp.h"
#include "warp/warpCUDA.h"

namespace regrisk::cuda {
namespace {

__global__ void __launch_bounds__(kThreads)
    compose_affine_kernel(const float* __restrict__ disp, int64_t b, Dims32 g,
                          const float* __restrict__ affine, int64_t ba, float* __restrict__ out) {
  const int64_t n_vox = int64_t(g.d) * g.h * g.w;
  for (int64_t bi = blockIdx.y; bi < b; bi += gridDim.y) {
    const float* a = affine + broadcast_index(bi, ba) * 12;
    const float* __restrict__ u = disp + bi * 3 * n_vox;
    float* __restrict__ dst = out + bi * 3 * n_vox;
    for (int64_t n = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; n < n_vox;
         n += int64_t(gridDim.x) * blockDim.x) {
      float i, j, k;
      unravel(static_cast<uint32_t>(n), g, i, j, k);
      // Double registers as in the CPU build: the coordinate terms cancel before rounding.
      double gz, gy, gx;
      compose_affine_voxel<double>(a, i, j, k, u[n], u[n_vox + n], u[2 * n_vox + n], gz, gy, gx);
      dst[n] = static_cast<float>(gz);
      dst[n_vox + n] = static_cast<float>(gy);
      dst[2 * n_vox + n] = static_cast<float>(gx);
    }
  }
}

template <Boundary M>
__global__ void __launch_bounds__(kThreads)
    compose_field_kernel(const float* __restrict__ disp, int64_t b, Dims32 g,
                         const float* __restrict__ field, int64_t bf, Grid3 fg,
                         float* __restrict__ out, float fill) {
  const int64_t n_vox = int64_t(g.d) * g.h * g.w;
  const int64_t n_f = fg.size();
  for (int64_t bi = blockIdx.y; bi < b; bi += gridDim.y) {
    const float* __restrict__ f = field + broadcast_index(bi, bf) * 3 * n_f;
    const float* __restrict__ u = disp + bi * 3 * n_vox;
    float* __restrict__ dst = out + bi * 3 * n_vox;
    for (int64_t n = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; n < n_vox;
         n += int64_t(gridDim.x) * blockDim.x) {
      float i, j, k;
      unravel(static_cast<uint32_t>(n), g, i, j, k);
      const float uz = u[n], uy = u[n_vox + n], ux = u[2 * n_vox + n];
      const float z = i + uz, y = j + uy, x = k + ux;
      const Trilinear t = trilinear_at(fg, z, y, x);  // weights shared by the 3 channels
      dst[n] = trilinear_value(f, fg, t, z, y, x, M, fill) + uz;
      dst[n_vox + n] = trilinear_value(f + n_f, fg, t, z, y, x, M, fill) + uy;
      dst[2 * n_vox + n] = trilinear_value(f + 2 * n_f, fg, t, z, y, x, M, fill) + ux;
    }
  }
}

}  // namespace

void compose_affine(const float* disp, int64_t b, int64_t D, int64_t H, int64_t W,
                    const float* affine, int64_t ba, float* out, int device, std::uintptr_t stream) {
  const int64_t n_vox = D * H * W;
  if (b == 0 || n_vox == 0) return;
  detail::check_voxels(n_vox, "compose_affine");
  const detail::DeviceGuard guard(device);
  const Dims32 g{uint32_t(D), uint32_t(H), uint32_t(W)};
  compose_affine_kernel<<<grid_for(n_vox, b), kThreads, 0, reinterpret_cast<cudaStream_t>(stream)>>>(
      disp, b, g, affine, ba, out);
  detail::check_launch("compose_affine");
}

void compose_field(const float* disp, int64_t b, int64_t D, int64_t H, int64_t W,
                   const float* field, int64_t bf, int64_t d, int64_t h, int64_t w, float* out,
                   float fill, bool border, int device, std::uintptr_t stream) {
  const int64_t n_vox = D * H * W;
  if (b == 0 || n_vox == 0) return;
  detail::check_voxels(n_vox, "compose_field");
  const detail::DeviceGuard guard(device);
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  const Dims32 g{uint32_t(D), uint32_t(H), uint32_t(W)};
  const Grid3 fg{d, h, w};
  if (border) {
    compose_field_kernel<Boundary::Border>
        <<<grid_for(n_vox, b), kThreads, 0, s>>>(disp, b, g, field, bf, fg, out, fill);
  } else {
    compose_field_kernel<Boundary::Fill>
        <<<grid_for(n_vox, b), kThreads, 0, s>>>(disp, b, g, field, bf, fg, out, fill);
  }
  detail::check_launch("compose_field");
}

}  // namespace regrisk::cuda
