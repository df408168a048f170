// CPU (OpenMP) conv3x3x3: each team member takes a contiguous run of output planes (b, i) and
// keeps zero-padded copies of the three input planes they read (padding along k; an all-zero
// row for i or j outside the volume), so each input row is copied about once. A row is computed
// in chunks of kChunk voxels with up to 4 output channels' sums held in registers across every
// channel and tap.
#include "conv/conv.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "common/parallel.h"

namespace regrisk {
namespace {

constexpr int kChunk = 64;  // voxels per chunk: 4 AVX-512 or 8 AVX2 vectors per output channel

// The sums of OB output channels for the kChunk voxels from x0: rows[c * 9 + t] is channel c's
// padded input row for tap t = 3a + b', w the OB channels' weights (O, C, 27) from the first.
template <int OB>
REGRISK_ALWAYS_INLINE void chunk(const float* const* rows, const float* w, int64_t C,
                                 const float* bias, float* const* outs, int64_t x0, int64_t n) {
  float acc[OB][kChunk];
  for (int o = 0; o < OB; ++o)
    for (int x = 0; x < kChunk; ++x) acc[o][x] = bias[o];
  for (int64_t c = 0; c < C; ++c)
    for (int t = 0; t < 9; ++t) {
      const float* r = rows[c * 9 + t] + x0;
      for (int e = 0; e < 3; ++e)
        for (int o = 0; o < OB; ++o) {
          const float wv = w[(o * C + c) * 27 + t * 3 + e];
          for (int x = 0; x < kChunk; ++x) acc[o][x] += wv * r[x + e];
        }
    }
  for (int o = 0; o < OB; ++o) std::memcpy(outs[o] + x0, acc[o], sizeof(float) * size_t(n));
}

// One output row for OB channels (chunk after chunk); built for AVX-512 and AVX2 too.
#define REGRISK_CONV_ROW(OB)                                                                   \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"))) void row##OB(                  \
      const float* const* rows, const float* w, int64_t C, const float* bias, float* const* outs, \
      int64_t W) {                                                                             \
    for (int64_t x0 = 0; x0 < W; x0 += kChunk)                                                 \
      chunk<OB>(rows, w, C, bias, outs, x0, std::min<int64_t>(kChunk, W - x0));                \
  }
REGRISK_CONV_ROW(1)
REGRISK_CONV_ROW(2)
REGRISK_CONV_ROW(3)
REGRISK_CONV_ROW(4)
#undef REGRISK_CONV_ROW

void row(int ob, const float* const* rows, const float* w, int64_t C, const float* bias,
         float* const* outs, int64_t W) {
  switch (ob) {
    case 1: return row1(rows, w, C, bias, outs, W);
    case 2: return row2(rows, w, C, bias, outs, W);
    case 3: return row3(rows, w, C, bias, outs, W);
    default: return row4(rows, w, C, bias, outs, W);
  }
}

// Zero-padded copies of input planes, three at a time: plane (b, i) of every channel lives in
// slot i % 3 while it is needed, so each input plane is copied once per run of planes.
class PlaneRing {
 public:
  PlaneRing(int64_t C, Grid3 g, int64_t stride)
      : C_(C), g_(g), stride_(stride), rows_(size_t(3 * C * g.h * stride + stride), 0.0f) {}

  // The padded row j of channel c of plane i (batch item b), copied in on first use; the
  // all-zero row outside the volume.
  const float* row(const float* in, int64_t b, int64_t c, int64_t i, int64_t j) {
    if (i < 0 || i >= g_.d || j < 0 || j >= g_.h) return zero();
    const int slot = int(i % 3);
    if (held_[slot] != b * g_.d + i) load(in, b, i, slot);
    return rows_.data() + ((slot * C_ + c) * g_.h + j) * stride_;
  }

 private:
  const float* zero() const { return rows_.data() + 3 * C_ * g_.h * stride_; }

  void load(const float* in, int64_t b, int64_t i, int slot) {
    for (int64_t c = 0; c < C_; ++c)
      for (int64_t j = 0; j < g_.h; ++j)
        std::memcpy(rows_.data() + ((slot * C_ + c) * g_.h + j) * stride_ + 1,
                    in + (((b * C_ + c) * g_.d + i) * g_.h + j) * g_.w, sizeof(float) * size_t(g_.w));
    held_[slot] = b * g_.d + i;
  }

  int64_t C_;
  Grid3 g_;
  int64_t stride_;
  std::vector<float> rows_;  // 3 slots x C x H padded rows, then the zero row; pads stay 0
  int64_t held_[3] = {-1, -1, -1};
};

}  // namespace

void conv3x3x3(const Array& volume, const Array& weight, const Array& bias, const Array& out,
               Threads threads) {
  const Grid3 g = volume.grid(2);
  const int64_t B = volume.dim(0), C = volume.dim(1), O = weight.dim(0), planes = B * g.d;
  // padded row: 1 zero, W values, zeros up to a whole last chunk plus 2 taps
  const int64_t stride = ((g.w + kChunk - 1) / kChunk) * kChunk + 2;
  const float* in = volume.in();
  const float* w = weight.in();
  const float* bs = bias.in();
  float* dst = out.out();
  const int team = int(std::min<int64_t>(cpu::team_for(threads.n, O * C * 27 * B * g.size()), planes));
  // each member a contiguous run of output planes, so that its ring copies each input once
#pragma omp parallel for schedule(static) num_threads(team)
  for (int member = 0; member < team; ++member) {
    PlaneRing ring(C, g, stride);
    std::vector<const float*> rows(size_t(9 * C));
    for (int64_t p = planes * member / team; p < planes * (member + 1) / team; ++p) {
      const int64_t b = p / g.d, i = p % g.d;
      for (int64_t j = 0; j < g.h; ++j) {
        for (int64_t c = 0; c < C; ++c)
          for (int t = 0; t < 9; ++t) rows[c * 9 + t] = ring.row(in, b, c, i + t / 3 - 1, j + t % 3 - 1);
        for (int64_t o0 = 0; o0 < O; o0 += 4) {
          const int ob = int(std::min<int64_t>(4, O - o0));
          float* outs[4];
          for (int o = 0; o < ob; ++o) outs[o] = dst + ((b * O + o0 + o) * g.d + i) * g.h * g.w + j * g.w;
          row(ob, rows.data(), w + o0 * C * 27, C, bs + o0, outs, g.w);
        }
      }
    }
  }
}

}  // namespace regrisk
