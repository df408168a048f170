"""Applying drawn perturbations: warp the source by tau, compose each prediction back.

A block of draws is one family (all affine or all B-spline), so each micro-batch is one kernel
call per step with no masking. With the nested design each perturbation is repeated ``passes``
times, consecutively, so that the statistics can group a perturbation's passes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from .kernels import Bound
from .perturbations import Block, DrawSet

Array = Any


def micro_batches(draws: DrawSet, batch: int, passes: int = 1) -> Iterator[list[Block]]:
    """The draws' rows (each repeated ``passes`` times), in order, cut into network calls of
    at most ``batch`` rows; a call is a list of single-family blocks, so that families share a
    call (a backend running images in lanes gets even calls, not a family's odd remainder)."""
    call: list[Block] = []
    room = batch
    for block in draws.blocks:
        rows = np.repeat(np.arange(len(block)), passes)
        while rows.size:
            take, rows = rows[:room], rows[room:]
            call.append(block.take(take))
            room -= take.size
            if room == 0:
                yield call
                call, room = [], batch
    if call:
        yield call


def perturb_source(S: Array, block: Block, xp: Any, ops: Bound) -> tuple[Array, Array | None]:
    """(b, 1, *grid) sources S o tau for the block's b draws, and the dense displacement
    fields of a B-spline block (None for an affine one), which the composition reuses."""
    grid = tuple(S.shape)
    if block.dense:
        fields = ops.bspline_field(xp.asarray(block.control), grid)
        return ops.warp(S[None], fields), fields
    return ops.warp(S[None], affine=xp.asarray(block.affine)), None


def compose_back(u: Array, block: Block, fields: Array | None, xp: Any, ops: Bound) -> Array:
    """g = tau o phi_tau for each sample: the estimate of the original map (DESIGN.md)."""
    if fields is not None:
        return ops.compose(u, field=fields)
    return ops.compose(u, affine=xp.asarray(block.affine))
