// The CUDA build of the Welford ops (kernels in welfordCUDA.cu): the same arrays as welford.h,
// mean / m2 / batch / out in device memory, M in host memory (passed to the kernels by value);
// checked by welford/checks.h. Launches are asynchronous on the stream.
#pragma once

#include <cstdint>

#include "common/array.h"
#include "common/execution.h"

namespace regrisk {

void welford_update(int64_t count_before, const Array& mean, const Array& m2, const Array& batch,
                    Stream stream);

void welford_merge(int64_t n_a, const Array& mean_a, const Array& m2_a, int64_t n_b,
                   const Array& mean_b, const Array& m2_b, Stream stream);

void welford_sigma(int64_t count, const Array& m2, const Array& M, const Array& out,
                   Stream stream);

void welford_axis_sigma(int64_t count, const Array& m2, const Array& M, const Array& out,
                        Stream stream);

}  // namespace regrisk
