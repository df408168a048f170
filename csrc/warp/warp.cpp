// CPU (OpenMP) warps. One parallel loop over output rows (b, i, j), dynamically scheduled in
// chunks (for_each_row): every output value is produced whole by one thread with the same
// arithmetic, so the result is bitwise identical for any thread count or schedule. Each row is
// sampled in chunks of kChunk points (common/point_sampler.h).
#include "warp/warp.h"

#include "common/parallel.h"
#include "common/point_sampler.h"

namespace regrisk {
namespace {

// Samples `volume` at the points that row_points(b, i, j) gives for each output row: a callable
// filling z, y, x for the chunk (k0, n) of that row.
template <class RowPoints>
void warp_rows(const Array& volume, const Array& out, float fill, Boundary mode, int threads,
               RowPoints row_points) {
  const Grid3 in = volume.grid(2), og = out.grid(2);
  const int64_t Bv = volume.dim(0), C = volume.dim(1), B = out.dim(0);
  const int64_t n_in = in.size(), n_out = og.size();
  const float* src = volume.in();
  float* dst = out.out();
  cpu::for_each_row(B, og, C * og.w, B * C * n_out, threads, [&](int64_t b, int64_t i, int64_t j) {
    const float* vol = src + broadcast_index(b, Bv) * C * n_in;
    float* o = dst + b * C * n_out + (i * og.h + j) * og.w;
    const auto points = row_points(b, i, j);
    float z[cpu::kChunk], y[cpu::kChunk], x[cpu::kChunk];
    cpu::for_each_chunk(og.w, [&](int k0, int n) {
      points(k0, n, z, y, x);
      cpu::sample_points(vol, C, n_in, in, z, y, x, n, o + k0, n_out, mode, fill);
    });
  });
}

}  // namespace

void warp_displacement(const Array& volume, const Array& disp, const Array& out, float fill,
                       Boundary mode, Threads threads) {
  const Grid3 og = disp.grid(2);
  const int64_t n_out = og.size();
  const float* u = disp.in();
  warp_rows(volume, out, fill, mode, threads.n, [&](int64_t b, int64_t i, int64_t j) {
    const float* u_row = u + b * 3 * n_out + (i * og.h + j) * og.w;
    return [=](int k0, int n, float* z, float* y, float* x) {
      cpu::displaced_points(u_row, n_out, static_cast<float>(i), static_cast<float>(j), k0, n,
                            z, y, x);
    };
  });
}

void warp_grid(const Array& volume, const Array& grid, const Array& out, float fill,
               Boundary mode, bool align_corners, Threads threads) {
  const Grid3 og = out.grid(2), in = volume.grid(2);
  const float* gr = grid.in();
  // per axis (i, j, k): the scale of the normalised coordinate and the centre, in float as
  // NumPy had them (np.float32 of the double expressions)
  const double n[3] = {static_cast<double>(in.d), static_cast<double>(in.h),
                       static_cast<double>(in.w)};
  float scale[3], centre[3];
  for (int a = 0; a < 3; ++a) {
    scale[a] = static_cast<float>(align_corners ? 0.5 * (n[a] - 1.0) : 0.5 * n[a]);
    centre[a] = static_cast<float>(0.5 * (n[a] - 1.0));
  }
  warp_rows(volume, out, fill, mode, threads.n, [&](int64_t b, int64_t i, int64_t j) {
    const float* g = gr + ((b * og.d + i) * og.h + j) * og.w * 3;
    const float fi = static_cast<float>(i), fj = static_cast<float>(j);
    const float di = centre[0] - fi, dj = centre[1] - fj;
    return [=](int k0, int cnt, float* __restrict z, float* __restrict y, float* __restrict x) {
      for (int p = 0; p < cnt; ++p) {
        const float* q = g + (k0 + p) * 3;  // x, y, z: the array axes k, j, i
        const float fk = static_cast<float>(k0 + p);
        const float ui = q[2] * scale[0] + di, uj = q[1] * scale[1] + dj,
                    uk = q[0] * scale[2] + (centre[2] - fk);
        z[p] = fi + ui;
        y[p] = fj + uj;
        x[p] = fk + uk;
      }
    };
  });
}

// A row's affine (a copy; the coordinate buffers, __restrict, cannot alias it) and its (i, j).
struct AffineRow {
  float A[12];
  double i, j;

  void operator()(int k0, int n, float* __restrict z, float* __restrict y,
                  float* __restrict x) const {
#pragma omp simd
    for (int p = 0; p < n; ++p) {
      // The coordinate in double (as on the GPU), rounded once to float for the sample.
      double zd, yd, xd;
      affine_point<double>(A, i, j, static_cast<double>(k0 + p), zd, yd, xd);
      z[p] = static_cast<float>(zd);
      y[p] = static_cast<float>(yd);
      x[p] = static_cast<float>(xd);
    }
  }
};

void warp_affine(const Array& volume, const Array& affine, const Array& out, float fill,
                 Boundary mode, Threads threads) {
  const float* aff = affine.in();
  warp_rows(volume, out, fill, mode, threads.n, [&](int64_t b, int64_t i, int64_t j) {
    AffineRow row;
    for (int c = 0; c < 12; ++c) row.A[c] = aff[b * 12 + c];
    row.i = static_cast<double>(i);
    row.j = static_cast<double>(j);
    return row;
  });
}

}  // namespace regrisk
