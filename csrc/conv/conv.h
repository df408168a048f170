// A network's last layer run by regrisk: the 3x3x3 convolution that turns a U-Net's
// full-resolution features into a displacement field (a handful of output channels).
// Backends block such a layer for many output channels; this kernel holds up to 4 output
// channels' sums in registers (8 -> 3 channels at 128^3: ~26 ms on 2 cores;
// backends/native_head.py).
//
//   conv3x3x3: out[b, o] = bias[o] + sum over c, then a, b', e of
//     weight[o, c, a, b', e] * volume[b, c, i + a - 1, j + b' - 1, k + e - 1]
//   (zero padding 1, stride 1), volume (B, C, D, H, W), weight (O, C, 3, 3, 3), bias (O),
//   out (B, O, D, H, W).
//
// Each output value is computed whole by one thread, from its bias, adding each product in the
// order written (padding taps add a product with 0): the same bits whatever the team size. The
// x86-64-v3/v4 builds fuse each multiply-add (the layer is compute-bound), so results equal
// reference.conv3x3x3 to float32 rounding, not bit for bit. CPU only.
#pragma once

#include "common/array.h"
#include "common/execution.h"

namespace regrisk {

void conv3x3x3(const Array& volume, const Array& weight, const Array& bias, const Array& out,
               Threads threads);

}  // namespace regrisk
