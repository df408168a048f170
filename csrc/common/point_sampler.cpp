// The chunked trilinear sampler of the CPU kernels (see point_sampler.h).
#include "common/point_sampler.h"

#include <cstring>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#include <immintrin.h>
#define REGRISK_GATHER 1
#else
#define REGRISK_GATHER 0
#endif

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

#if REGRISK_GATHER
// One channel with AVX-512, 16 points at a time in registers: the interior test, the corner
// offset and the weights as locate_points and trilinear_weights form them, each corner one
// masked gather, then the same products and pairwise sums as trilinear_interior (no fused
// multiply-add: GCC would contract the intrinsics but for -ffp-contract=off), so every value is
// bit for bit the scalar loop's; the other points through sample_trilinear as there. Offsets
// are 32-bit: the caller takes this path only for volumes of fewer than 2^31 values.
__attribute__((target("avx512f")))
static void sample_points_gather(const float* vol, int64_t C, int64_t cstride, Grid3 g,
                                 const float* z, const float* y, const float* x, int n,
                                 float* out, int64_t ostride, Boundary mode, float fill) {
  const __m512 zero = _mm512_setzero_ps(), one = _mm512_set1_ps(1.0f);
  const __m512 dm = _mm512_set1_ps(static_cast<float>(g.d - 1)),
               hm = _mm512_set1_ps(static_cast<float>(g.h - 1)),
               wm = _mm512_set1_ps(static_cast<float>(g.w - 1));
  const __m512i H = _mm512_set1_epi32(static_cast<int32_t>(g.h)),
                W = _mm512_set1_epi32(static_cast<int32_t>(g.w));
  const int64_t sy = g.w, sz = g.h * g.w;
  const int64_t corner[8] = {0, 1, sy, sy + 1, sz, sz + 1, sz + sy, sz + sy + 1};
  for (int p = 0; p < n; p += 16) {
    const __mmask16 lanes = n - p >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - p)) - 1u);
    const __m512 zp = _mm512_maskz_loadu_ps(lanes, z + p), yp = _mm512_maskz_loadu_ps(lanes, y + p),
                 xp = _mm512_maskz_loadu_ps(lanes, x + p);
    __mmask16 in = lanes & _mm512_cmp_ps_mask(zp, zero, _CMP_GE_OQ) &
                   _mm512_cmp_ps_mask(yp, zero, _CMP_GE_OQ) & _mm512_cmp_ps_mask(xp, zero, _CMP_GE_OQ);
    in &= _mm512_cmp_ps_mask(zp, dm, _CMP_LT_OQ) & _mm512_cmp_ps_mask(yp, hm, _CMP_LT_OQ) &
          _mm512_cmp_ps_mask(xp, wm, _CMP_LT_OQ);
    // other lanes compute on 0 (no out-of-range conversion); their results are not stored
    const __m512 zs = _mm512_maskz_mov_ps(in, zp), ys = _mm512_maskz_mov_ps(in, yp),
                 xs = _mm512_maskz_mov_ps(in, xp);
    const __m512i z0 = _mm512_cvttps_epi32(zs), y0 = _mm512_cvttps_epi32(ys),
                  x0 = _mm512_cvttps_epi32(xs);
    const __m512 fz = _mm512_sub_ps(zs, _mm512_cvtepi32_ps(z0)),
                 fy = _mm512_sub_ps(ys, _mm512_cvtepi32_ps(y0)),
                 fx = _mm512_sub_ps(xs, _mm512_cvtepi32_ps(x0));
    const __m512 gz = _mm512_sub_ps(one, fz), gy = _mm512_sub_ps(one, fy),
                 gx = _mm512_sub_ps(one, fx);
    const __m512 w00 = _mm512_mul_ps(gz, gy), w01 = _mm512_mul_ps(gz, fy),
                 w10 = _mm512_mul_ps(fz, gy), w11 = _mm512_mul_ps(fz, fy);
    const __m512 w[8] = {_mm512_mul_ps(w00, gx), _mm512_mul_ps(w00, fx),
                         _mm512_mul_ps(w01, gx), _mm512_mul_ps(w01, fx),
                         _mm512_mul_ps(w10, gx), _mm512_mul_ps(w10, fx),
                         _mm512_mul_ps(w11, gx), _mm512_mul_ps(w11, fx)};
    const __m512i at = _mm512_add_epi32(
        _mm512_mullo_epi32(_mm512_add_epi32(_mm512_mullo_epi32(z0, H), y0), W), x0);
    for (int64_t ch = 0; ch < C; ++ch) {  // every channel with the point's weights
      const float* src = vol + ch * cstride;
      __m512 v[8];
      for (int k = 0; k < 8; ++k)
        v[k] = _mm512_mul_ps(w[k], _mm512_mask_i32gather_ps(zero, in, at, src + corner[k], 4));
      const __m512 a = _mm512_add_ps(v[0], v[1]), b = _mm512_add_ps(v[2], v[3]),
                   c = _mm512_add_ps(v[4], v[5]), d = _mm512_add_ps(v[6], v[7]);
      _mm512_mask_storeu_ps(out + ch * ostride + p, in,
                            _mm512_add_ps(_mm512_add_ps(a, b), _mm512_add_ps(c, d)));
      for (unsigned rest = static_cast<unsigned>(lanes & ~in); rest; rest &= rest - 1) {
        const int q = p + __builtin_ctz(rest);
        out[ch * ostride + q] = sample_trilinear(src, g, z[q], y[q], x[q], mode, fill);
      }
    }
  }
}

static bool gather_cpu() {
  static const bool has = __builtin_cpu_supports("avx512f");
  return has;
}
#endif

bool gather_sampling() {
#if REGRISK_GATHER
  return gather_cpu();
#else
  return false;
#endif
}

void sample_points(const float* vol, int64_t C, int64_t cstride, Grid3 g, const float* z,
                   const float* y, const float* x, int n, float* out, int64_t ostride,
                   Boundary mode, float fill) {
#if REGRISK_GATHER
  if (g.size() < (int64_t(1) << 31) && gather_cpu()) {
    sample_points_gather(vol, C, cstride, g, z, y, x, n, out, ostride, mode, fill);
    return;
  }
#endif
  if (C == 1) {
    sample_points_1(vol, g, z, y, x, n, out, mode, fill);
  } else {
    sample_points_body(vol, C, cstride, g, z, y, x, n, out, ostride, mode, fill);
  }
}

}  // namespace cpu
}  // namespace regrisk
