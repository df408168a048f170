"""The calibration file: versioned JSON tied to one model (sha256) and one grid.

It holds only data (numbers, names, hashes): loading it runs no code. Its ``id`` is the sha256
of its own content (without the id), so ``summary.json`` can name exactly which calibration
produced an error map.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, ModelError
from .model import ErrorModel
from .qc import VerdictRule

FORMAT = "regrisk.calibration"
VERSION = 1
DEFAULT_NAME = "default.calibration.json"  # beside models/default.onnx


def image_sha256(data: np.ndarray, affine: np.ndarray) -> str:
    """Hash of an image's voxels (as float32) and affine: what the cases were built from."""
    h = hashlib.sha256(np.ascontiguousarray(data, dtype=np.float32).tobytes())
    h.update(np.asarray(affine, dtype=np.float64).tobytes())
    return h.hexdigest()


def model_identity(est: Any) -> dict[str, Any]:
    """sha256 of the model's file (``callable:<name>`` for a callable) and its grid; the grid
    of a callable is known only once it has run."""
    from ..cohort.fingerprints import file_sha256  # one file hash, cached per process

    path = getattr(est.resolved.source, "path", None)
    sha = file_sha256(path) if path is not None else f"callable:{est.resolved.label}"
    card = est.card
    return {"sha256": sha, "label": est.resolved.label,
            "grid": list(card.grid) if card is not None else None}


@dataclass
class Calibration:
    payload: dict[str, Any]
    model: ErrorModel
    rule: VerdictRule
    path: str | None = None

    @property
    def id(self) -> str:
        return str(self.payload["id"])

    @property
    def default_threshold(self) -> float:
        return float(self.payload["qc"]["default_threshold_mm"])

    def check_model(self, identity: dict[str, Any]) -> None:
        """ModelError (one line) unless this calibration was made for ``identity``'s model
        and grid (a grid of None, a callable before it ran, is checked later)."""
        mine = self.payload["model"]
        where = self.path or "calibration"
        if mine["sha256"] != identity["sha256"]:
            raise ModelError(f"{where} was made for model {mine['label']} (sha256 "
                             f"{mine['sha256'][:16]}), not for {identity['label']} (sha256 "
                             f"{identity['sha256'][:16]}); use --calibration with one made for "
                             "this model, or --no-calibration")
        if identity.get("grid") is not None and list(mine["grid"]) != list(identity["grid"]):
            raise ModelError(f"{where} was made for grid {tuple(mine['grid'])}, the model runs "
                             f"on {tuple(identity['grid'])}")


def content_id(payload: dict[str, Any]) -> str:
    body = {k: v for k, v in payload.items() if k != "id"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def build(payload: dict[str, Any], model: ErrorModel, rule: VerdictRule) -> Calibration:
    payload = dict(payload, format=FORMAT, version=VERSION, error_model=model.to_dict())
    payload["qc"] = dict(payload.get("qc", {}), rule=rule.to_dict())
    payload["id"] = content_id(payload)
    return Calibration(payload, model, rule)


def save(cal: Calibration, path: str | os.PathLike[str]) -> None:
    from ..io import write_text_atomic

    write_text_atomic(path, json.dumps(cal.payload, indent=1, sort_keys=True) + "\n")


def load(path: str | os.PathLike[str]) -> Calibration:
    """Read and validate a calibration file; InputError naming the problem otherwise."""
    p = Path(path)
    try:
        payload = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"calibration {p}: cannot read it ({exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(f"calibration {p}: not a regrisk calibration file")
    if payload.get("version") != VERSION:
        raise InputError(f"calibration {p}: version {payload.get('version')!r}, this regrisk "
                         f"reads version {VERSION}")
    try:
        model = ErrorModel.from_dict(payload["error_model"])
        rule = VerdictRule.from_dict(payload["qc"]["rule"])
        for key in ("sha256", "label", "grid"):
            payload["model"][key]  # noqa: B018 (presence check)
        float(payload["qc"]["default_threshold_mm"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"calibration {p}: malformed ({type(exc).__name__}: {exc})") from None
    if payload.get("id") != content_id(payload):
        raise InputError(f"calibration {p}: its content does not match its id (edited by hand?)")
    return Calibration(payload, model, rule, str(p))


def default_path() -> Path:
    from importlib import resources

    return Path(str(resources.files("regrisk") / "models" / DEFAULT_NAME))


def for_model(model: Any, spec: str | os.PathLike[str] | None, enabled: bool = True
              ) -> Calibration | None:
    """The calibration an estimate uses: ``spec`` when given, the shipped one for the packaged
    default model, ``<model>.calibration.json`` beside an ONNX file (where ``regrisk calibrate``
    writes it by default), else none (and none at all when ``enabled`` is False)."""
    if not enabled:
        return None
    if spec is not None:
        return load(spec)
    if isinstance(model, str) and model == "default":
        return load(default_path()) if default_path().is_file() else None
    if isinstance(model, (str, os.PathLike)):
        beside = Path(model).with_suffix(".calibration.json")
        return load(beside) if beside.is_file() else None
    return None
