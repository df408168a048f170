// CUDA cubic B-spline field. The weights come from the shared bspline_locate / bspline_basis
// (bspline/bspline.h), in double and rounded to float exactly as the CPU's axis tables are.
//
// Main kernel: one block per output row (i, j) of one batch item. The block first contracts the
// control grid along D and H for that row (3 * cW values, in shared memory), then each thread
// finishes its voxels with the 4 taps along W: about 12 multiply-adds per voxel instead of 192,
// so the kernel is bound by the output writes. The CPU contracts in the order W, H, D; the sums
// here run D, H, W, so the two agree to float32 rounding (a few ulp), not bit for bit.
// Control grids wider than kMaxCtrl along W fall back to a per-voxel kernel (64 taps per voxel).
#include "bspline/bspline.h"
#include "common/launch.cuh"

namespace regrisk {
namespace cuda {
namespace {

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
    for (int64_t n = first_voxel(); n < n_vox; n += voxel_stride()) {
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

constexpr int kMaxCtrl = 256;  // control points along W that fit the shared row buffer

__global__ void __launch_bounds__(kThreads)
    bspline_rows_kernel(const float* __restrict__ control, int64_t b, Grid3 cg, Dims32 g,
                        float* __restrict__ out) {
  __shared__ float row[3 * kMaxCtrl];  // [channel][control column], D and H contracted
  const int64_t rows = int64_t(g.d) * g.h;
  const int64_t n_vox = rows * g.w;
  const int64_t n_ctrl = cg.size();
  const int64_t cols = 3 * cg.w;
  for (int64_t bi = blockIdx.y; bi < b; bi += gridDim.y) {
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
      const int64_t i = r / g.h, j = r - (r / g.h) * g.h;
      for (int64_t e = threadIdx.x; e < cols; e += blockDim.x) {
        const int64_t ch = e / cg.w, cx = e - ch * cg.w;
        float wz[4], wy[4];
        const int64_t fz = axis_weights(i, g.d, cg.d, wz);
        const int64_t fy = axis_weights(j, g.h, cg.h, wy);
        const float* __restrict__ c = control + (bi * 3 + ch) * n_ctrl + cx;
        float s[4];
#pragma unroll
        for (int a = 0; a < 4; ++a) {
          const float* p = c + ((fz + a) * cg.h + fy) * cg.w;
          s[a] = taps(wy, p[0], p[cg.w], p[2 * cg.w], p[3 * cg.w]);
        }
        row[e] = taps(wz, s[0], s[1], s[2], s[3]);
      }
      __syncthreads();
      float* __restrict__ dst = out + bi * 3 * n_vox + r * g.w;
      for (int64_t k = threadIdx.x; k < g.w; k += blockDim.x) {
        float wx[4];
        const int64_t fx = axis_weights(k, g.w, cg.w, wx);
#pragma unroll
        for (int ch = 0; ch < 3; ++ch) {
          const float* t = row + ch * cg.w + fx;
          dst[ch * n_vox + k] = taps(wx, t[0], t[1], t[2], t[3]);
        }
      }
      __syncthreads();  // the next row reuses the buffer
    }
  }
}

}  // namespace
}  // namespace cuda

void bspline_field(const Array& control, const Array& out, Stream stream) {
  using namespace cuda;
  const Grid3 cg = control.grid(2), og = out.grid(2);
  const Dims32 g = dims32(og, "bspline_field");
  const int64_t b = control.dim(0);
  if (cg.w <= kMaxCtrl) {
    const int64_t rows = og.d * og.h;
    const dim3 grid(static_cast<unsigned>(rows < 65535 * 64 ? rows : 65535 * 64),
                    static_cast<unsigned>(b < 65535 ? b : 65535));
    // Enough threads for the row's voxels and its 3 * cW contractions, in whole warps.
    const int64_t want = ((og.w > 3 * cg.w ? og.w : 3 * cg.w) + 31) / 32 * 32;
    const int threads = static_cast<int>(want < kThreads ? want : kThreads);
    launch("bspline_field", stream, grid, threads, bspline_rows_kernel, control.in(), b, cg, g,
           out.out());
  } else {
    launch("bspline_field", stream, grid_for(og.size(), b), kThreads, bspline_kernel, control.in(),
           b, cg, g, out.out());
  }
}

}  // namespace regrisk
