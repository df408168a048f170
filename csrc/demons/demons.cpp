// CPU (OpenMP) demons step. Four passes, each parallel over planes i: the update v (one row of
// k at a time, so the gradient's neighbours along i and j are rows of sw), then the Gaussian
// along i, j and k, between two scratch volumes and out. Every output value is computed whole
// by one thread in a fixed order: results do not depend on the team size.
#include "demons/demons.h"

#include <algorithm>
#include <vector>

#include "common/parallel.h"

namespace regrisk {
namespace {

struct Dims {
  int64_t D, H, W, n;  // n = D * H * W
  int64_t at(int64_t i, int64_t j) const { return (i * H + j) * W; }
};

// The update v for row (i, j); central differences, zero on the faces.
REGRISK_CPU_CLONES void update_row(const float* __restrict sw, const float* __restrict t,
                                   const float* __restrict gt, const float* __restrict u,
                                   float* __restrict v, Dims g, int64_t i, int64_t j,
                                   float tau, float alpha, float eps) {
  const int64_t r = g.at(i, j), W = g.W, n = g.n;
  const float* up_i = (i > 0 && i < g.D - 1) ? sw + g.at(i + 1, j) : nullptr;
  const float* dn_i = up_i ? sw + g.at(i - 1, j) : nullptr;
  const float* up_j = (j > 0 && j < g.H - 1) ? sw + g.at(i, j + 1) : nullptr;
  const float* dn_j = up_j ? sw + g.at(i, j - 1) : nullptr;
  for (int64_t k = 0; k < W; ++k) {
    const float s = sw[r + k];
    const float d = s - t[r + k];
    const float di = up_i ? 0.5f * (up_i[k] - dn_i[k]) : 0.0f;
    const float dj = up_j ? 0.5f * (up_j[k] - dn_j[k]) : 0.0f;
    const float dk = (k > 0 && k < W - 1) ? 0.5f * (sw[r + k + 1] - sw[r + k - 1]) : 0.0f;
    const float gi = 0.5f * (gt[r + k] + di);
    const float gj = 0.5f * (gt[n + r + k] + dj);
    const float gk = 0.5f * (gt[2 * n + r + k] + dk);
    const float step = tau * d / (gi * gi + gj * gj + gk * gk + alpha * d * d + eps);
    v[r + k] = u[r + k] - step * gi;
    v[n + r + k] = u[n + r + k] - step * gj;
    v[2 * n + r + k] = u[2 * n + r + k] - step * gk;
  }
}

// The Gaussian along one axis for one plane i of one channel (H x W values, contiguous). Along
// i the taps are whole planes; along j and k they are the same plane shifted by q W or q
// elements, so each tap is one long loop over the plane's interior that vectorises, and only
// the rows (along j) or columns (along k) within R of a face are redone with clamped taps.
REGRISK_CPU_CLONES void taps(const float* __restrict in, float* __restrict o, int64_t n,
                             const float* w, int R, int64_t stride) {
  std::fill(o, o + n, 0.0f);
  for (int q = -R; q <= R; ++q) {
    const float wq = w[q + R];
    const float* src = in + q * stride;
    for (int64_t m = 0; m < n; ++m) o[m] += wq * src[m];
  }
}

float clamped_tap(const float* in, int64_t pos, int64_t len, int64_t stride, const float* w,
                  int R) {
  float acc = 0.0f;
  for (int q = -R; q <= R; ++q) acc += w[q + R] * in[std::clamp<int64_t>(pos + q, 0, len - 1) * stride];
  return acc;
}

void smooth_plane_i(const float* in, float* out, Dims g, int64_t i, const float* w, int R) {
  const int64_t n = g.H * g.W;
  float* o = out + i * n;
  std::fill(o, o + n, 0.0f);
  for (int q = -R; q <= R; ++q) {
    const float* src = in + std::clamp<int64_t>(i + q, 0, g.D - 1) * n;
    const float wq = w[q + R];
    for (int64_t m = 0; m < n; ++m) o[m] += wq * src[m];
  }
}

void smooth_plane_j(const float* in, float* out, Dims g, int64_t i, const float* w, int R) {
  const int64_t W = g.W, H = g.H;
  const float* p = in + i * H * W;
  float* o = out + i * H * W;
  const int64_t lo = std::min<int64_t>(R, H), hi = std::max<int64_t>(lo, H - R);
  if (hi > lo) taps(p + lo * W, o + lo * W, (hi - lo) * W, w, R, W);
  for (int64_t j = 0; j < H; ++j) {
    if (j >= lo && j < hi) continue;
    for (int64_t k = 0; k < W; ++k) o[j * W + k] = clamped_tap(p + k, j, H, W, w, R);
  }
}

void smooth_plane_k(const float* in, float* out, Dims g, int64_t i, const float* w, int R) {
  const int64_t W = g.W, n = g.H * g.W;
  const float* p = in + i * n;
  float* o = out + i * n;
  if (n > 2 * R) taps(p + R, o + R, n - 2 * R, w, R, 1);  // wrong only within R of a row's end
  for (int64_t j = 0; j < g.H; ++j)
    for (int64_t k = 0; k < W; ++k)
      if (k < R || k >= W - R) o[j * W + k] = clamped_tap(p + j * W, k, W, 1, w, R);
}

// body(volume b, channel c, plane i) over every plane of a (B, C, D) set.
template <class Body>
void planes(int64_t B, int64_t C, Dims g, int threads, Body&& body) {
  const int64_t total = B * C * g.D;
#pragma omp parallel for schedule(static) num_threads(cpu::team_for(threads, B * C * g.n))
  for (int64_t r = 0; r < total; ++r) body(r / (g.D * C), (r / g.D) % C, r % g.D);
}

}  // namespace

void demons_step(const Array& sw, const Array& t, const Array& gt, const Array& u,
                 const Array& kernel, const Array& out, float tau, float alpha, float eps,
                 Threads threads) {
  const Dims g{sw.dim(2), sw.dim(3), sw.dim(4), sw.dim(2) * sw.dim(3) * sw.dim(4)};
  const int64_t B = sw.dim(0);
  const int R = static_cast<int>(kernel.dim(0) / 2);
  const float* w = kernel.in();
  // Scratch kept between calls (a demons level calls this 20 times on the same grid): fresh
  // allocations of this size are new pages, and their faults cost as much as the arithmetic.
  thread_local std::vector<float> v, tmp;
  const size_t need = static_cast<size_t>(B * 3 * g.n);
  if (v.size() < need) {
    v.resize(need);
    tmp.resize(need);
  }
  // Pointers, not the vectors, inside the parallel loops: a lambda does not capture a
  // thread_local, and the team's other threads would see their own (empty) ones.
  float* const V = v.data();
  float* const TMP = tmp.data();
  const float *S = sw.in(), *T = t.in(), *GT = gt.in(), *U = u.in();
  float* O = out.out();
  planes(B, 1, g, threads.n, [&](int64_t b, int64_t, int64_t i) {
    for (int64_t j = 0; j < g.H; ++j)
      update_row(S + b * g.n, T + b * g.n, GT + b * 3 * g.n, U + b * 3 * g.n, V + b * 3 * g.n, g,
                 i, j, tau, alpha, eps);
  });
  // along i (V -> TMP), along j (TMP -> V), along k (V -> out)
  planes(B, 3, g, threads.n, [&](int64_t b, int64_t c, int64_t i) {
    smooth_plane_i(V + (b * 3 + c) * g.n, TMP + (b * 3 + c) * g.n, g, i, w, R);
  });
  planes(B, 3, g, threads.n, [&](int64_t b, int64_t c, int64_t i) {
    smooth_plane_j(TMP + (b * 3 + c) * g.n, V + (b * 3 + c) * g.n, g, i, w, R);
  });
  planes(B, 3, g, threads.n, [&](int64_t b, int64_t c, int64_t i) {
    smooth_plane_k(V + (b * 3 + c) * g.n, O + (b * 3 + c) * g.n, g, i, w, R);
  });
}

}  // namespace regrisk
