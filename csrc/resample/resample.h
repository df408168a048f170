// Resampling by whole factors on (B, C, D, H, W) float32 volumes, the two that staged graphs
// hand to regrisk instead of their backend (backends/native_resize.py, native_demons.py):
//
//   upsample2: linear x2 along i, j and k with half-pixel centres and clamped edges (ONNX
//     Resize "linear" + "half_pixel", torch interpolate align_corners=False), one axis at a
//     time in the order i, j, k: out[2m] = .75 x[m] + .25 x[m-1], out[2m+1] = .75 x[m] +
//     .25 x[m+1], the neighbour index clamped to [0, n-1]; out is (B, C, 2D, 2H, 2W);
//   average_pool: the mean of each f x f x f block (ONNX AveragePool, cubic kernel f, stride
//     f, no padding; trailing remainders dropped), summed in the order i, j, k of the block
//     then scaled by float(1 / f^3); out is (B, C, D / f, H / f, W / f).
//
// Each output value is computed whole by one thread with float32 operations in the order
// written (no fused multiply-add in either build): results equal reference.upsample2 and
// reference.average_pool bit for bit, whatever the team size. CPU only.
#pragma once

#include "common/array.h"
#include "common/execution.h"

namespace regrisk {

void upsample2(const Array& volume, const Array& out, Threads threads);

void average_pool(const Array& volume, int factor, const Array& out, Threads threads);

}  // namespace regrisk
