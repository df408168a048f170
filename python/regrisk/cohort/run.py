"""The cohort driver: plan which pairs need running (nothing lost, nothing redone), run them on
an engine, record every outcome in the manifest as it arrives, and write ``cohort.csv`` and
``report.html``. The engines never see the manifest; the driver never sees inside an estimate.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CohortError, first_line
from . import folder, report, table
from ..model_loading import resolve
from .calibrated import calibration_id
from .fingerprints import model_sha256, pair_key
from .local import LocalEngine
from .manifest import Manifest
from .outcome import DONE, FAILED, Outcome
from .pairs import Pair, missing_inputs, read_pairs
from .progress import CohortProgress
from .ray_engine import RayEngine, RayOptions
from .settings import EstimateSettings


@dataclass
class CohortSummary:
    out: Path
    total: int
    done: int = 0                 # complete and current (this run or an earlier one)
    failed: int = 0
    skipped: int = 0              # already complete from an earlier run, not run again
    ran: int = 0                  # pairs an engine ran in this run
    interrupted: bool = False
    failures: list[str] = field(default_factory=list)   # "id: error line"


@dataclass
class Plan:
    run: list[Pair]
    keys: dict[str, dict[str, Any]]
    current: dict[str, dict[str, Any]]      # id -> manifest record, complete and current
    refused: list[Outcome]                   # pairs failed before running (missing files)


@dataclass(frozen=True)
class Identity:
    model: str                     # sha256 of the model
    calibration: str | None        # id of the calibration the estimates use


def plan(pairs: Sequence[Pair], manifest: Manifest, identity: Identity,
         settings: EstimateSettings, root: Path) -> Plan:
    """Which pairs to run: not those whose result is complete and whose key (inputs, model,
    settings) is the one recorded; pairs with missing or unreadable files fail here."""
    p = Plan([], {}, {}, [])
    for pair in pairs:
        problems = missing_inputs(pair)
        if not problems:
            try:
                p.keys[pair.id] = pair_key(pair, identity.model, settings, identity.calibration)
            except OSError as exc:
                problems = [f"pair {pair.id}: cannot read an input ({first_line(exc)})"]
        if problems:
            p.refused.append(Outcome(pair.id, FAILED, 0.0, error="; ".join(problems)))
        elif (manifest.is_current(pair.id, p.keys[pair.id])
              and folder.is_complete(root / pair.id)):
            p.current[pair.id] = manifest.get(pair.id)  # type: ignore[assignment]
        else:
            p.run.append(pair)
    return p


def make_engine(name: str, model: Any, settings: EstimateSettings,
                ray_options: RayOptions | None) -> LocalEngine | RayEngine:
    """The engine by name; refuses an unknown one, or Ray where it is not installed."""
    if name == "ray":
        return RayEngine(model, settings, ray_options or RayOptions())
    if name == "local":
        return LocalEngine(model, settings)
    raise CohortError(f"engine {name!r}: use 'local' or 'ray'")


def run_cohort(pairs: str | os.PathLike[str] | Sequence[Pair], out: str | os.PathLike[str],
               model: Any = "default", settings: EstimateSettings | None = None,
               engine: str = "local", ray_options: RayOptions | None = None,
               progress: bool = False, on_outcome: Callable[[Outcome], None] | None = None,
               on_refused: Callable[[str], None] | None = None) -> CohortSummary:
    """Run every pair of ``pairs`` (a CSV path or Pair objects) into ``out``, resuming what an
    earlier run left. ``on_refused`` gets one line per pair refused before running (missing
    files); ``on_outcome`` each outcome as it is recorded. Ctrl-C stops cleanly: the summary
    says ``interrupted`` and a rerun resumes."""
    settings = settings or EstimateSettings()
    listed = read_pairs(pairs) if isinstance(pairs, (str, os.PathLike)) else list(pairs)
    resolved = resolve(model)               # refuses a bad model or calibration before anything
    identity = Identity(model_sha256(resolved), calibration_id(model, resolved, settings))
    runner = make_engine(engine, model, settings, ray_options)
    out = folder.prepare(out)
    with folder.locked(out):
        manifest = Manifest(out)
        folder.remove_leftovers(out)
        todo = plan(listed, manifest, identity, settings, out / folder.PAIRS)
        summary = CohortSummary(out, len(listed), skipped=len(todo.current))
        for outcome in todo.refused:
            if on_refused is not None:
                on_refused(outcome.error or "")
            manifest.record(outcome, None)
        bar = CohortProgress(len(listed), len(todo.current), len(todo.refused), progress)
        try:
            for outcome in runner.run(todo.run, out / folder.PAIRS):
                manifest.record(outcome, todo.keys.get(outcome.id))
                summary.ran += 1
                bar.update(outcome)
                if on_outcome is not None:
                    on_outcome(outcome)
        except KeyboardInterrupt:
            summary.interrupted = True
        finally:
            bar.close()
            folder.remove_leftovers(out)
            current = _current(Manifest(out), listed, todo.keys)  # what the disk says
            _write_outputs(out, listed, current, model, settings)
    return _count(summary, current)


def _current(manifest: Manifest, pairs: list[Pair],
             keys: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each pair's latest record when it was made from the pair's present key (None for a
    pair refused before running); pairs without one are pending."""
    out = {}
    for pair in pairs:
        record = manifest.get(pair.id)
        if record is not None and record.get("key") == keys.get(pair.id):
            out[pair.id] = record
    return out


def _write_outputs(out: Path, pairs: list[Pair], current: dict[str, dict[str, Any]],
                   model: Any, settings: EstimateSettings) -> None:
    rows = table.rows(pairs, current)
    table.write_csv(out / "cohort.csv", rows)
    label = model if isinstance(model, (str, os.PathLike)) else getattr(model, "__name__", "callable")
    chosen = {k: v for k, v in settings.result_defining().items() if v is not None}
    report.write(out, rows, {"model": str(label), "settings": chosen})


def _count(summary: CohortSummary, current: dict[str, dict[str, Any]]) -> CohortSummary:
    for pid, rec in current.items():
        if rec.get("status") == DONE:
            continue
        summary.failed += 1
        summary.failures.append(f"{pid}: {rec.get('error')}")
    summary.done = sum(rec.get("status") == DONE for rec in current.values())
    return summary
