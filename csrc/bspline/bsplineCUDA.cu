// CUDA cubic B-spline field: one thread per output voxel of one batch item, all three channels.
// The weights come from the shared bspline_locate / bspline_basis (bspline/bspline.h), in double
// and rounded to float exactly as the CPU's axis tables are, and the 64 taps are contracted in
// the CPU's order (along W, then H, then D, four taps left to right), so both builds agree to
// float32 rounding. The control grid is tiny and stays in L1/L2.
#include <cuda_runtime.h>

#include <cstdint>

#include "bspline/bspline.h"
#include "bspline/bsplineCUDA.h"
#include "warp/warpCUDA.h"

namespace regrisk::cuda {
namespace {

constexpr int kThreads = 256;

dim3 grid_for(int64_t voxels, int64_t batch) {
  const int64_t blocks = (voxels + kThreads - 1) / kThreads;
  return dim3(static_cast<unsigned>(blocks < 65535 * 64 ? blocks : 65535 * 64),
              static_cast<unsigned>(batch < 65535 ? batch : 65535));
}

struct Dims32 {
  uint32_t d, h, w;
};

// Weights and first control index for voxel x on an axis of n voxels and c control points.
__device__ __forceinline__ int64_t axis_weights(int64_t x, int64_t n, int64_t c, float w[4]) {
  int64_t first;
  double u, wd[4];
  bspline_locate<double>(x, n, c, first, u);
  bspline_basis<double>(u, wd);
#pragma unroll
  for (int k = 0; k < 4; ++k) w[k] = static_cast<float>(wd[k]);
  return first;
}

__device__ __forceinline__ float taps(const float w[4], float c0, float c1, float c2, float c3) {
  return w[0] * c0 + w[1] * c1 + w[2] * c2 + w[3] * c3;
}

__global__ void __launch_bounds__(kThreads)
    bspline_kernel(const float* __restrict__ control, int64_t b, Grid3 cg, Dims32 g,
                   float* __restrict__ out) {
  const int64_t n_vox = int64_t(g.d) * g.h * g.w;
  const int64_t n_ctrl = cg.size();
  for (int64_t bi = blockIdx.y; bi < b; bi += gridDim.y) {
    for (int64_t n = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; n < n_vox;
         n += int64_t(gridDim.x) * blockDim.x) {
      const uint32_t n32 = static_cast<uint32_t>(n);
      const uint32_t t = n32 / g.w, k = n32 - t * g.w, i = t / g.h, j = t - i * g.h;
      float wz[4], wy[4], wx[4];
      const int64_t fz = axis_weights(i, g.d, cg.d, wz);
      const int64_t fy = axis_weights(j, g.h, cg.h, wy);
      const int64_t fx = axis_weights(k, g.w, cg.w, wx);
#pragma unroll
      for (int ch = 0; ch < 3; ++ch) {
        const float* __restrict__ c = control + (bi * 3 + ch) * n_ctrl;
        float s2[4];
#pragma unroll
        for (int a = 0; a < 4; ++a) {
          float s1[4];
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const float* row = c + ((fz + a) * cg.h + (fy + e)) * cg.w + fx;
            s1[e] = taps(wx, row[0], row[1], row[2], row[3]);
          }
          s2[a] = taps(wy, s1[0], s1[1], s1[2], s1[3]);
        }
        out[(bi * 3 + ch) * n_vox + n] = taps(wz, s2[0], s2[1], s2[2], s2[3]);
      }
    }
  }
}

}  // namespace

void bspline_field(const float* control, int64_t b, int64_t cd, int64_t ch, int64_t cw,
                   float* out, int64_t D, int64_t H, int64_t W, int device, std::uintptr_t stream) {
  const int64_t n_vox = D * H * W;
  if (b == 0 || n_vox == 0) return;
  detail::check_voxels(n_vox, "bspline_field");
  detail::use_device(device);
  const Grid3 cg{cd, ch, cw};
  const Dims32 g{uint32_t(D), uint32_t(H), uint32_t(W)};
  bspline_kernel<<<grid_for(n_vox, b), kThreads, 0, reinterpret_cast<cudaStream_t>(stream)>>>(
      control, b, cg, g, out);
  detail::check_launch("bspline_field");
}

}  // namespace regrisk::cuda
