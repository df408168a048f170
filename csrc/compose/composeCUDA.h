// The CUDA build of compose (kernels in composeCUDA.cu): the same arrays as compose.h, in
// device memory, checked by compose/checks.h. Launches are asynchronous on the stream.
#pragma once

#include "common/array.h"
#include "common/boundary.h"
#include "common/execution.h"

namespace regrisk {

void compose_affine(const Array& disp, const Array& affine, const Array& out, Stream stream);

void compose_field(const Array& disp, const Array& field, const Array& out, float fill,
                   Boundary mode, Stream stream);

}  // namespace regrisk
