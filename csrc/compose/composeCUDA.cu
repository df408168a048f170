// CUDA kernels for compose: one thread per voxel of one batch item. Per-voxel math is shared
// with the CPU build: compose_affine_voxel (compose.h) and the CPU's per-point trilinear
// sampling (trilinear_at / trilinear_value, common/sampling.h).
#include "common/launch.cuh"
#include "common/sampling.h"
#include "compose/compose.h"

namespace regrisk {
namespace cuda {
namespace {

// u_g at voxel (i, j, k) of batch item bi, from u = (uz, uy, ux) there.
struct AffineStep {
  const float* affine;
  int64_t ba;

  __device__ __forceinline__ void operator()(int64_t bi, float i, float j, float k, float uz,
                                             float uy, float ux, float* g) const {
    // Double registers as in the CPU build: the coordinate terms cancel before rounding.
    double gz, gy, gx;
    compose_affine_voxel<double>(affine + broadcast_index(bi, ba) * 12, i, j, k, uz, uy, ux, gz,
                                 gy, gx);
    g[0] = static_cast<float>(gz);
    g[1] = static_cast<float>(gy);
    g[2] = static_cast<float>(gx);
  }
};

template <Boundary M>
struct FieldStep {
  const float* field;
  int64_t bf;
  Grid3 fg;
  float fill;

  __device__ __forceinline__ void operator()(int64_t bi, float i, float j, float k, float uz,
                                             float uy, float ux, float* g) const {
    const int64_t n_f = fg.size();
    const float* __restrict__ f = field + broadcast_index(bi, bf) * 3 * n_f;
    const float z = i + uz, y = j + uy, x = k + ux;
    const Trilinear t = trilinear_at(fg, z, y, x);  // weights shared by the 3 channels
    g[0] = trilinear_value(f, fg, t, z, y, x, M, fill) + uz;
    g[1] = trilinear_value(f + n_f, fg, t, z, y, x, M, fill) + uy;
    g[2] = trilinear_value(f + 2 * n_f, fg, t, z, y, x, M, fill) + ux;
  }
};

template <class Step>
__global__ void __launch_bounds__(kThreads)
    compose_kernel(const float* __restrict__ disp, int64_t b, Dims32 g, Step step,
                   float* __restrict__ out) {
  const int64_t n_vox = int64_t(g.d) * g.h * g.w;
  for (int64_t bi = blockIdx.y; bi < b; bi += gridDim.y) {
    const float* __restrict__ u = disp + bi * 3 * n_vox;
    float* __restrict__ dst = out + bi * 3 * n_vox;
    for (int64_t n = first_voxel(); n < n_vox; n += voxel_stride()) {
      float i, j, k, v[3];
      unravel(static_cast<uint32_t>(n), g, i, j, k);
      step(bi, i, j, k, u[n], u[n_vox + n], u[2 * n_vox + n], v);
      dst[n] = v[0];
      dst[n_vox + n] = v[1];
      dst[2 * n_vox + n] = v[2];
    }
  }
}

template <class Step>
void launch_compose(const char* what, const Array& disp, const Array& out, Step step, Stream s) {
  const Dims32 g = dims32(disp.grid(2), what);
  const int64_t b = disp.dim(0);
  launch(what, s, grid_for(disp.grid(2).size(), b), kThreads, compose_kernel<Step>, disp.in(), b,
         g, step, out.out());
}

}  // namespace
}  // namespace cuda

void compose_affine(const Array& disp, const Array& affine, const Array& out, Stream stream) {
  cuda::launch_compose("compose_affine", disp, out, cuda::AffineStep{affine.in(), affine.dim(0)},
                       stream);
}

void compose_field(const Array& disp, const Array& field, const Array& out, float fill,
                   Boundary mode, Stream stream) {
  with_boundary(mode, [&](auto m) {
    const cuda::FieldStep<decltype(m)::value> step{field.in(), field.dim(0), field.grid(2), fill};
    cuda::launch_compose("compose_field", disp, out, step, stream);
  });
}

}  // namespace regrisk
