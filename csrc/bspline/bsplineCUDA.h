// The CUDA build of bspline_field (kernels in bsplineCUDA.cu): the same arrays as bspline.h, in
// device memory, checked by bspline/checks.h. Launches are asynchronous on the stream.
#pragma once

#include "common/array.h"
#include "common/execution.h"

namespace regrisk {

void bspline_field(const Array& control, const Array& out, Stream stream);

}  // namespace regrisk
