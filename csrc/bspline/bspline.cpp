// CPU (OpenMP) cubic B-spline field, evaluated separably: contract the control grid along W,
// then H, then D (4 taps each) instead of 64 taps per voxel. Per-axis supports and weights are
// tabulated once. Each parallel loop writes disjoint outputs with a fixed tap order, so the
// result does not depend on the thread count.
#include "bspline/bspline.h"

#include <vector>

#include "common/parallel.h"

namespace regrisk {
namespace {

struct AxisTable {
  std::vector<int64_t> first;  // first control index per voxel
  std::vector<float> w;        // 4 weights per voxel
};

AxisTable axis_table(int64_t n, int64_t c) {
  AxisTable t{std::vector<int64_t>(n), std::vector<float>(4 * n)};
  for (int64_t x = 0; x < n; ++x) {
    double u, w[4];
    bspline_locate<double>(x, n, c, t.first[x], u);
    bspline_basis<double>(u, w);
    for (int k = 0; k < 4; ++k) t.w[4 * x + k] = static_cast<float>(w[k]);
  }
  return t;
}

// control (B, 3, cg) -> out (B, 3, g).
void separable_field(const float* control, int64_t B, Grid3 cg, float* out, Grid3 g, int threads) {
  using cpu::chunk_for;
  const AxisTable tz = axis_table(g.d, cg.d), ty = axis_table(g.h, cg.h),
                  tx = axis_table(g.w, cg.w);
  const int64_t planes = B * 3;
  // Stage 1: (planes, cD, cH, cW) -> (planes, cD, cH, W); stage 2: -> (planes, cD, H, W).
  std::vector<float> s1(planes * cg.d * cg.h * g.w), s2(planes * cg.d * g.h * g.w);
  const int64_t rows1 = planes * cg.d * cg.h;
#pragma omp parallel num_threads(cpu::team_for(threads, planes * g.size()))
  {
#pragma omp for schedule(dynamic, chunk_for(g.w))
    for (int64_t r = 0; r < rows1; ++r) {
      const float* src = control + r * cg.w;
      float* dst = s1.data() + r * g.w;
      for (int64_t k = 0; k < g.w; ++k) {
        const float* c = src + tx.first[k];
        const float* w = &tx.w[4 * k];
        dst[k] = w[0] * c[0] + w[1] * c[1] + w[2] * c[2] + w[3] * c[3];
      }
    }
    const int64_t rows2 = planes * cg.d * g.h;
#pragma omp for schedule(dynamic, chunk_for(g.w))
    for (int64_t r = 0; r < rows2; ++r) {
      const int64_t p = r / g.h, j = r % g.h;  // p indexes (plane, control depth)
      const float* src = s1.data() + (p * cg.h + ty.first[j]) * g.w;
      const float* w = &ty.w[4 * j];
      float* dst = s2.data() + r * g.w;
      for (int64_t k = 0; k < g.w; ++k) {
        dst[k] = w[0] * src[k] + w[1] * src[g.w + k] + w[2] * src[2 * g.w + k] +
                 w[3] * src[3 * g.w + k];
      }
    }
    const int64_t rows3 = planes * g.d * g.h, slab = g.h * g.w;
#pragma omp for schedule(dynamic, chunk_for(g.w))
    for (int64_t r = 0; r < rows3; ++r) {
      const int64_t plane = r / (g.d * g.h), i = (r / g.h) % g.d, j = r % g.h;
      const float* src = s2.data() + (plane * cg.d + tz.first[i]) * slab + j * g.w;
      const float* w = &tz.w[4 * i];
      float* dst = out + plane * g.size() + (i * g.h + j) * g.w;
      for (int64_t k = 0; k < g.w; ++k) {
        dst[k] = w[0] * src[k] + w[1] * src[slab + k] + w[2] * src[2 * slab + k] +
                 w[3] * src[3 * slab + k];
      }
    }
  }
}

}  // namespace

void bspline_field(const Array& control, const Array& out, Threads threads) {
  separable_field(control.in(), control.dim(0), control.grid(2), out.out(), out.grid(2), threads.n);
}

}  // namespace regrisk
