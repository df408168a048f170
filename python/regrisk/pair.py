"""A source/target pair made ready for the network: images, grid maps and grid volumes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import conventions, spaces
from .card import ModelCard
from .io import Image
from .timing import StageClock

Array = Any


@dataclass
class PreparedPair:
    """Everything the sample loop and the outputs need about one pair.

    ``S`` and ``T`` are the preprocessed source and target on the model grid, on the backend's
    array module; ``source_native`` is the native source there too (for the warped output).
    """

    source: Image
    target: Image
    smap: spaces.GridMap
    tmap: spaces.GridMap
    S: Array
    T: Array
    source_native: Array
    xp: Any
    ops: Any                # kernels.Bound: the run's kernels, its thread count bound

    @property
    def grid(self) -> tuple[int, int, int]:
        return self.tmap.grid_shape

    @property
    def grid_to_mm(self) -> Any:
        """(3, 3) source model-grid voxel -> mm: turns the samples' covariance into mm."""
        return self.smap.to_mm

    def native_fields(self, u: Array) -> tuple[Array, Array]:
        """(world mm displacement, source-native displacement) of a model-grid field."""
        return spaces.native_fields(self.smap, self.tmap, u, self.ops, self.xp)

    def to_native(self, volume: Array) -> Array:
        """A model-grid map on the target's native grid."""
        return self.tmap.to_native(self.xp.ascontiguousarray(volume), self.ops)


def prepare_pair(source: Image, target: Image, card: ModelCard, xp: Any, ops: Any,
                 clock: StageClock) -> PreparedPair:
    """Bring both images onto the card's grid and apply its intensity preprocessing."""
    with clock.stage("to_grid"):
        smap = spaces.grid_map(source.shape, source.affine, card)
        tmap = spaces.grid_map(target.shape, target.affine, card)
        source_native = xp.asarray(source.data)
        S = smap.to_grid(source_native, ops)
        T = tmap.to_grid(xp.asarray(target.data), ops)
    with clock.stage("preprocess"):
        S = conventions.preprocess(S, card, "source")
        T = conventions.preprocess(T, card, "target")
    return PreparedPair(source, target, smap, tmap, S, T, source_native, xp, ops)
