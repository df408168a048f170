// CPU (OpenMP) warps. One parallel loop over output rows (b, i, j), dynamically scheduled in
// chunks (chunk_for): every output value is produced whole by one thread with the same
// arithmetic, so the result is bitwise identical for any thread count or schedule. Each row is
// sampled in chunks of kChunk points.
#include "warp/warp.h"

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

}  // namespace

#if defined(__GNUC__) || defined(__clang__)
#define REGRISK_ALWAYS_INLINE __attribute__((always_inline)) inline
#else
#define REGRISK_ALWAYS_INLINE inline
#endif

// The body of sample_points, inlined into each of its builds below.
REGRISK_ALWAYS_INLINE void sample_points_body(
    const float* vol, int64_t C, int64_t cstride, Grid3 g, const float* z, const float* y,
    const float* x, int n, float* out, int64_t ostride, Boundary mode, float fill) {
  const float dm = static_cast<float>(g.d - 1), hm = static_cast<float>(g.h - 1),
              wm = static_cast<float>(g.w - 1);
  int32_t iz[kChunk], iy[kChunk], ix[kChunk];
  float w[8][kChunk];
  int32_t inside[kChunk];
  // Pass 1 (vectorised): interior test, integer corner, weights. Non-interior lanes compute on
  // 0 so that no out-of-range float -> int conversion happens; their results are unused.
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
  // Pass 2: the corner gathers; every channel reuses the point's weights. One channel (warps)
  // and three (compose) are spelled out (measured faster than the generic channel loop).
  const int64_t sy = g.w, sz = g.h * g.w;
  int64_t off[kChunk];
  for (int p = 0; p < n; ++p) off[p] = (static_cast<int64_t>(iz[p]) * g.h + iy[p]) * g.w + ix[p];
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

void warp_displacement(const float* volume, int64_t Bv, int64_t C, Grid3 in, const float* disp,
                       int64_t B, Grid3 og, float* out, float fill, Boundary mode, int threads) {
  const int64_t n_in = in.size(), n_out = og.size(), rows = B * og.d * og.h;
#pragma omp parallel for schedule(dynamic, chunk_for(C * og.w)) \
    num_threads(team_for(threads, B * C * n_out))
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t b = r / (og.d * og.h), i = (r / og.h) % og.d, j = r % og.h;
    const int64_t row = (i * og.h + j) * og.w;
    const float* __restrict uz = disp + b * 3 * n_out + row;
    const float* __restrict uy = uz + n_out;
    const float* __restrict ux = uz + 2 * n_out;
    const float* vol = volume + broadcast_index(b, Bv) * C * n_in;
    float* o = out + b * C * n_out + row;
    const float fi = static_cast<float>(i), fj = static_cast<float>(j);
    float z[kChunk], y[kChunk], x[kChunk];
    // Dimensions are < 2^31 (checked by the bindings): int counters convert to float in SIMD.
    for (int k0 = 0; k0 < static_cast<int>(og.w); k0 += kChunk) {
      const int n = static_cast<int>(og.w) - k0 < kChunk ? static_cast<int>(og.w) - k0 : kChunk;
#pragma omp simd
      for (int p = 0; p < n; ++p) {
        z[p] = fi + uz[k0 + p];
        y[p] = fj + uy[k0 + p];
        x[p] = static_cast<float>(k0 + p) + ux[k0 + p];
      }
      sample_points(vol, C, n_in, in, z, y, x, n, o + k0, n_out, mode, fill);
    }
  }
}

void warp_affine(const float* volume, int64_t Bv, int64_t C, Grid3 in, const float* affine,
                 int64_t B, Grid3 og, float* out, float fill, Boundary mode, int threads) {
  const int64_t n_in = in.size(), n_out = og.size(), rows = B * og.d * og.h;
#pragma omp parallel for schedule(dynamic, chunk_for(C * og.w)) \
    num_threads(team_for(threads, B * C * n_out))
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t b = r / (og.d * og.h), i = (r / og.h) % og.d, j = r % og.h;
    float A[12];  // a local copy: the coordinate buffers cannot alias it
    for (int c = 0; c < 12; ++c) A[c] = affine[b * 12 + c];
    const float* vol = volume + broadcast_index(b, Bv) * C * n_in;
    float* o = out + b * C * n_out + (i * og.h + j) * og.w;
    const double di = static_cast<double>(i), dj = static_cast<double>(j);
    float z[kChunk], y[kChunk], x[kChunk];
    for (int k0 = 0; k0 < static_cast<int>(og.w); k0 += kChunk) {
      const int n = static_cast<int>(og.w) - k0 < kChunk ? static_cast<int>(og.w) - k0 : kChunk;
#pragma omp simd
      for (int p = 0; p < n; ++p) {
        // The coordinate in double (as on the GPU), rounded once to float for the sample.
        double zd, yd, xd;
        affine_point<double>(A, di, dj, static_cast<double>(k0 + p), zd, yd, xd);
        z[p] = static_cast<float>(zd);
        y[p] = static_cast<float>(yd);
        x[p] = static_cast<float>(xd);
      }
      sample_points(vol, C, n_in, in, z, y, x, n, o + k0, n_out, mode, fill);
    }
  }
}

}  // namespace cpu
}  // namespace regrisk
