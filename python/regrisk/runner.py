"""The model runner: one network behind its card, fed in the engine's conventions.

It owns the card and the backend, builds the graph's feeds from the card's input layout, pads
and chunks batches for a graph with a fixed batch axis, and converts whatever the card
declares into the canonical field (B, 3, *grid) voxel displacements.
"""

from __future__ import annotations

from typing import Any

from . import conventions, model_loading
from .backends import Backend, create_backend
from .card import ModelCard
from .errors import ModelError, NonFiniteError, RegriskError, first_line
from .model_loading import ResolvedModel
from .timing import StageClock

Array = Any


def require_finite(a: Array, who: str, what: str, xp: Any) -> None:
    """NonFiniteError unless every value of ``a`` is finite: a NaN must never become a number
    later (a broken model reported as certain is the worst thing this tool can do)."""
    if not bool(xp.isfinite(a).all()):
        bad = int(a.size - int(xp.isfinite(a).sum()))
        raise NonFiniteError(f"{who} non-finite values (NaN or Inf) for {what}: "
                             f"{bad} of {a.size} values")


class ModelRunner:
    """``backend`` is a backend name, None (the device's fastest installed) or a ready
    :class:`Backend` object, which the runner uses as it is and does not close."""

    def __init__(self, resolved: ResolvedModel, *, device: str, backend: str | Backend | None,
                 threads: int | None, options: dict[str, Any]) -> None:
        self.resolved = resolved
        self.device = device
        self.threads = threads
        self._options = dict(options)
        self._given = backend if isinstance(backend, Backend) else None
        self._name = None if isinstance(backend, Backend) else backend
        self.card: ModelCard | None = resolved.card
        self.backend: Backend | None = self._given
        if self.backend is None and resolved.kind == "onnx":
            self.backend = self._create(resolved.card)  # type: ignore[arg-type]

    @property
    def label(self) -> str:
        return self.resolved.label

    def _create(self, card: ModelCard) -> Backend:
        return create_backend(self.resolved.source, card, device=self.device, name=self._name,
                              threads=self.threads, options=self._options)

    def bind(self, target_shape: tuple[int, int, int]) -> tuple[Backend, ModelCard]:
        """The backend and card for a target of this shape (a callable without a card runs on
        the target's native grid, so its card follows the target)."""
        if self.resolved.kind == "callable":
            card = self.resolved.card or model_loading.callable_card(target_shape, self.label)
            if self.backend is None or self.card is None or self.card.grid != card.grid:
                if self._given is None:
                    self.close()
                    self.backend = self._create(card)
                self.card = card
        assert self.backend is not None and self.card is not None
        return self.backend, self.card

    def feeds(self, src: Array, tgt: Array, xp: Any) -> dict[str, Array]:
        inputs = self.card.inputs  # type: ignore[union-attr]
        if inputs.layout == "pair":
            return dict(zip(inputs.names(), (src, tgt)))
        pair = (src, tgt) if inputs.order == ("source", "target") else (tgt, src)
        return {inputs.names()[0]: xp.concatenate(pair, axis=1)}

    def infer(self, src: Array, tgt: Array, clock: StageClock, what: str) -> Array:
        """Canonical (b, 3, *grid) for b sources and targets, honouring a fixed batch axis.
        ``what`` names the samples in the error a non-finite output raises."""
        backend, xp = self.backend, self.backend.xp  # type: ignore[union-attr]
        b, fixed = src.shape[0], backend.fixed_batch  # type: ignore[union-attr]
        step = fixed or b
        outs = []
        for s in range(0, b, step):
            part_src, part_tgt = src[s:s + step], tgt[s:s + step]
            n = part_src.shape[0]
            if fixed and n < fixed:  # pad the last group; the extra outputs are dropped
                part_src = xp.concatenate([part_src] + [part_src[-1:]] * (fixed - n), axis=0)
                part_tgt = xp.ascontiguousarray(xp.broadcast_to(part_tgt[:1], part_src.shape))
            with clock.stage("inference"):
                raw = self._run(backend, self.feeds(part_src, part_tgt, xp), what)
            with clock.stage("convert"):
                u = self._canonical(raw)
                require_finite(u, f"model {self.label} returned", what, xp)
            outs.append(u[:n] if n < u.shape[0] else u)
        return outs[0] if len(outs) == 1 else xp.concatenate(outs, axis=0)

    def _run(self, backend: Backend, feeds: dict[str, Array], what: str) -> Array:
        """One network call; a runtime's own exception (ONNX Runtime, OpenVINO, TensorRT)
        becomes a ModelError naming the model and the samples."""
        try:
            return backend.run(feeds)
        except RegriskError:
            raise
        except Exception as exc:
            raise ModelError(f"model {self.label} failed on {what}: "
                             f"{first_line(exc, typed=True, limit=240)}") from exc

    def _canonical(self, raw: Array) -> Array:
        card = self.card
        try:
            return conventions.to_canonical(raw, card.output, card.grid)  # type: ignore[union-attr]
        except ValueError as exc:
            raise ModelError(f"model {self.label}: {exc}") from None

    def describe(self) -> dict[str, Any]:
        """The backend's facts, and the default backends skipped for this graph with why."""
        if self.backend is None:
            return {}
        info = self.backend.describe()
        info["chosen"] = "given" if self._given else "requested" if self._name else "automatic"
        if self.backend.skipped:
            info["skipped"] = dict(self.backend.skipped)
        return info

    def close(self) -> None:
        if self.backend is not None and self.backend is not self._given:
            self.backend.close()
        self.backend = self._given
