// CUDA launcher for the dense cubic B-spline field. Kernel: bsplineCUDA.cu.
// Device pointers, float32, C-contiguous; asynchronous on `stream`.
#pragma once

#include <cstdint>

namespace regrisk::cuda {

// control (B, 3, cD, cH, cW), each c >= 4 -> out (B, 3, D, H, W).
void bspline_field(const float* control, int64_t b, int64_t cd, int64_t ch, int64_t cw,
                   float* out, int64_t D, int64_t H, int64_t W, int device, std::uintptr_t stream);

}  // namespace regrisk::cuda
