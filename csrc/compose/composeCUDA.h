// CUDA launchers for compose (a displacement followed by a perturbation). Kernels:
// composeCUDA.cu. Device pointers, float32, C-contiguous; asynchronous on `stream`.
#pragma once

#include <cstdint>

namespace regrisk::cuda {

// out[b](x) = A (x + u(x)) + t - x; disp (B, 3, D, H, W), affine (Ba, 3, 4) with Ba in {1, B}.
void compose_affine(const float* disp, int64_t b, int64_t D, int64_t H, int64_t W,
                    const float* affine, int64_t ba, float* out, int device, std::uintptr_t stream);

// out[b](x) = u(x) + f(x + u(x)); disp (B, 3, D, H, W), field (Bf, 3, d, h, w), Bf in {1, B}.
void compose_field(const float* disp, int64_t b, int64_t D, int64_t H, int64_t W,
                   const float* field, int64_t bf, int64_t d, int64_t h, int64_t w, float* out,
                   float fill, bool border, int device, std::uintptr_t stream);

}  // namespace regrisk::cuda
