// One step of unrolled ESM demons, the fixed arithmetic of the default network's refinement
// (exporters/default_model/network.py, DemonsRefine), fused into one pass over the volume:
//
//   d = sw - t,  g = (gt + grad(sw)) / 2,  v = u - tau d g / (|g|^2 + alpha d^2 + eps),
//   out = G * v  (separable Gaussian along i, j, k; replicate borders)
//
// grad is the central difference (x[n+1] - x[n-1]) / 2, zero on the first and last plane of its
// axis. Arrays: sw, t (B, 1, D, H, W): the source warped by u and the target; gt (B, 3, ...):
// grad(t); u, out (B, 3, ...) in voxels; kernel (n,) odd, the 1-D Gaussian. CPU only: staged
// graphs (the only callers) run on CPU backends; GPU runtimes take the whole graph.
#pragma once

#include "common/array.h"
#include "common/boundary.h"
#include "common/execution.h"

namespace regrisk {

void demons_step(const Array& sw, const Array& t, const Array& gt, const Array& u,
                 const Array& kernel, const Array& out, float tau, float alpha, float eps,
                 Threads threads);

// `steps` demons steps on one level: sw = s warped by u (trilinear, border), u <- demons_step,
// repeated; out = the last u (u itself when steps is 0). The same arithmetic as warp_displacement
// and demons_step called in turn (bit for bit), in one call: a level of the default network is
// 20 steps, and two Python calls with fresh output arrays per step cost as much as the
// arithmetic on the coarse levels. s (B, 1, D, H, W) on u's grid; t, gt as for demons_step.
void demons_steps(const Array& s, const Array& t, const Array& gt, const Array& u,
                  const Array& kernel, const Array& out, int steps, float tau, float alpha,
                  float eps, Threads threads);

// out = volume filtered along i, j and k by the odd-length kernels ki, kj, kk, for
// (B, C, D, H, W) arrays, replicated borders: the same separable smoothing on its own (the
// default network's local contrast normalisation, the variance maps' pooling).
void gaussian_smooth(const Array& volume, const Array& ki, const Array& kj, const Array& kk,
                     const Array& out, Threads threads);

}  // namespace regrisk
