// The chunked trilinear sampler of the CPU kernels (see point_sampler.h).
#include "common/point_sampler.h"

#include <cstring>

namespace regrisk {
namespace cpu {
namespace {

// v where mask is all ones, +0 where it is zero: a select without a branch (a ?: on a float
// compare keeps GCC from vectorising under the default -ftrapping-math).
inline float keep_if(float v, uint32_t mask) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  bits &= mask;
  std::memcpy(&v, &bits, sizeof v);
  return v;
}

// Pass 1 (vectorised): interior test, integer corner offset, weights. Non-interior lanes
// compute on 0 so that no out-of-range float -> int conversion happens; their results are unused.
REGRISK_ALWAYS_INLINE void locate_points(Grid3 g, const float* z, const float* y, const float* x,
                                         int n, int32_t* inside, int64_t* off,
                                         float (*w)[kChunk]) {
  const float dm = static_cast<float>(g.d - 1), hm = static_cast<float>(g.h - 1),
              wm = static_cast<float>(g.w - 1);
  int32_t iz[kChunk], iy[kChunk], ix[kChunk];
#pragma omp simd
  for (int p = 0; p < n; ++p) {
    // Bitwise & (not &&): no branches, so the loop vectorises.
    const float zp = z[p], yp = y[p], xp = x[p];
    const int32_t in = (zp >= 0.f) & (yp >= 0.f) & (xp >= 0.f) & (zp < dm) & (yp < hm) & (xp < wm);
    const uint32_t mask = 0u - static_cast<uint32_t>(in);
    const float zs = keep_if(zp, mask), ys = keep_if(yp, mask), xs = keep_if(xp, mask);
    const int32_t z0 = static_cast<int32_t>(zs), y0 = static_cast<int32_t>(ys),
                  x0 = static_cast<int32_t>(xs);
    const float fz = zs - static_cast<float>(z0), fy = ys - static_cast<float>(y0),
                fx = xs - static_cast<float>(x0);
    trilinear_weights(fz, fy, fx, &w[0][p], kChunk);
    iz[p] = z0;
    iy[p] = y0;
    ix[p] = x0;
    inside[p] = in;
  }
  for (int p = 0; p < n; ++p) off[p] = (static_cast<int64_t>(iz[p]) * g.h + iy[p]) * g.w + ix[p];
}

// The body of sample_points, inlined into each of its builds below. Pass 2 does the corner
// gathers; every channel reuses the point's weights. One channel (warps) and three (compose)
// are spelled out (measured faster than the generic channel loop).
REGRISK_ALWAYS_INLINE void sample_points_body(
    const float* vol, int64_t C, int64_t cstride, Grid3 g, const float* z, const float* y,
    const float* x, int n, float* out, int64_t ostride, Boundary mode, float fill) {
  float w[8][kChunk];
  int32_t inside[kChunk];
  int64_t off[kChunk];
  locate_points(g, z, y, x, n, inside, off, w);
  const int64_t sy = g.w, sz = g.h * g.w;
  if (C == 1) {
    for (int p = 0; p < n; ++p)
      out[p] = inside[p] ? trilinear_interior(vol + off[p], sy, sz, &w[0][p], kChunk)
                         : sample_trilinear(vol, g, z[p], y[p], x[p], mode, fill);
  } else if (C == 3) {
    const float *c1 = vol + cstride, *c2 = vol + 2 * cstride;
    for (int p = 0; p < n; ++p) {
      if (inside[p]) {
        out[p] = trilinear_interior(vol + off[p], sy, sz, &w[0][p], kChunk);
        out[ostride + p] = trilinear_interior(c1 + off[p], sy, sz, &w[0][p], kChunk);
        out[2 * ostride + p] = trilinear_interior(c2 + off[p], sy, sz, &w[0][p], kChunk);
      } else {
        out[p] = sample_trilinear(vol, g, z[p], y[p], x[p], mode, fill);
        out[ostride + p] = sample_trilinear(c1, g, z[p], y[p], x[p], mode, fill);
        out[2 * ostride + p] = sample_trilinear(c2, g, z[p], y[p], x[p], mode, fill);
      }
    }
  } else {
    for (int64_t c = 0; c < C; ++c) {
      const float* ch = vol + c * cstride;
      float* o = out + c * ostride;
      for (int p = 0; p < n; ++p)
        o[p] = inside[p] ? trilinear_interior(ch + off[p], sy, sz, &w[0][p], kChunk)
                         : sample_trilinear(ch, g, z[p], y[p], x[p], mode, fill);
    }
  }
}

}  // namespace

// One channel (every warp in the pipeline) also has an AVX2 build: it measured ~13% faster;
// the three-channel path (compose) measured slower with it, so it stays on the default build.
REGRISK_CPU_CLONES
static void sample_points_1(const float* vol, Grid3 g, const float* z, const float* y,
                            const float* x, int n, float* out, Boundary mode, float fill) {
  sample_points_body(vol, 1, 0, g, z, y, x, n, out, 0, mode, fill);
}

void sample_points(const float* vol, int64_t C, int64_t cstride, Grid3 g, const float* z,
                   const float* y, const float* x, int n, float* out, int64_t ostride,
                   Boundary mode, float fill) {
  if (C == 1) {
    sample_points_1(vol, g, z, y, x, n, out, mode, fill);
  } else {
    sample_points_body(vol, C, cstride, g, z, y, x, n, out, ostride, mode, fill);
  }
}

}  // namespace cpu
}  // namespace regrisk
