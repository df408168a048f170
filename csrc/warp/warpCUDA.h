// The CUDA build of warp (kernels in warpCUDA.cu): the same arrays as warp.h, in device memory,
// float32, C-contiguous, checked by warp/checks.h. Launches are asynchronous on the stream.
#pragma once

#include "common/array.h"
#include "common/boundary.h"
#include "common/execution.h"

namespace regrisk {

void warp_displacement(const Array& volume, const Array& disp, const Array& out, float fill,
                       Boundary mode, Stream stream);

void warp_affine(const Array& volume, const Array& affine, const Array& out, float fill,
                 Boundary mode, Stream stream);

}  // namespace regrisk
