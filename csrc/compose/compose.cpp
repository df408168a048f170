// CPU (OpenMP) composition of a displacement with an affine or a dense perturbation.
// Rows are dynamically scheduled in chunks (for_each_row); each output value has one fixed
// computation, so results do not depend on the thread count.
#include "compose/compose.h"

#include "common/parallel.h"
#include "common/point_sampler.h"

namespace regrisk {

void compose_affine(const Array& disp, const Array& affine, const Array& out, Threads threads) {
  const Grid3 g = disp.grid(2);
  const int64_t B = disp.dim(0), Ba = affine.dim(0), n = g.size();
  const float* u = disp.in();
  const float* aff = affine.in();
  float* dst = out.out();
  cpu::for_each_row(B, g, 3 * g.w, B * n, threads.n, [&](int64_t b, int64_t i, int64_t j) {
    float A[12];  // a local copy: the outputs cannot alias it
    for (int c = 0; c < 12; ++c) A[c] = aff[broadcast_index(b, Ba) * 12 + c];
    const int64_t row = (i * g.h + j) * g.w;
    const float* __restrict uz = u + b * 3 * n + row;
    const float* __restrict uy = uz + n;
    const float* __restrict ux = uz + 2 * n;
    float* __restrict oz = dst + b * 3 * n + row;
    float* __restrict oy = oz + n;
    float* __restrict ox = oz + 2 * n;
    const double id = static_cast<double>(i), jd = static_cast<double>(j);
    const int w = static_cast<int>(g.w);  // int32 -> double converts in SIMD, int64 does not
#pragma omp simd
    for (int k = 0; k < w; ++k) {
      double gz, gy, gx;
      compose_affine_voxel<double>(A, id, jd, static_cast<double>(k), uz[k], uy[k], ux[k], gz,
                                   gy, gx);
      oz[k] = static_cast<float>(gz);
      oy[k] = static_cast<float>(gy);
      ox[k] = static_cast<float>(gx);
    }
  });
}

void compose_field(const Array& disp, const Array& field, const Array& out, float fill,
                   Boundary mode, Threads threads) {
  const Grid3 g = disp.grid(2), fg = field.grid(2);
  const int64_t B = disp.dim(0), Bf = field.dim(0), n = g.size(), nf = fg.size();
  const float* u = disp.in();
  const float* f = field.in();
  float* dst = out.out();
  cpu::for_each_row(B, g, 3 * g.w, B * n, threads.n, [&](int64_t b, int64_t i, int64_t j) {
    const int64_t row = (i * g.h + j) * g.w;
    const float* __restrict u_row = u + b * 3 * n + row;
    const float* d = f + broadcast_index(b, Bf) * 3 * nf;
    float* o = dst + b * 3 * n + row;
    float z[cpu::kChunk], y[cpu::kChunk], x[cpu::kChunk];
    cpu::for_each_chunk(g.w, [&](int k0, int m) {
      cpu::displaced_points(u_row, n, static_cast<float>(i), static_cast<float>(j), k0, m, z, y, x);
      // The three channels of d at x + u(x), written to out, then u added in place.
      cpu::sample_points(d, 3, nf, fg, z, y, x, m, o + k0, n, mode, fill);
      for (int c = 0; c < 3; ++c)
        for (int p = 0; p < m; ++p) o[c * n + k0 + p] += u_row[c * n + k0 + p];
    });
  });
}

}  // namespace regrisk
