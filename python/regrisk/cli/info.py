"""``regrisk info``: versions, native build flags, ONNX Runtime providers, devices, the default
model's shipped calibration."""

from __future__ import annotations

import argparse
import json

from ..errors import InputError, ModelError, first_line


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("info", help="versions, build flags and available providers")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def gather() -> dict:
    from ..engine import versions

    info: dict = {"versions": versions()}
    info["versions"].pop("kernels", None)
    try:
        from .. import kernels

        info["build"] = kernels.build_info()
    except ImportError as exc:
        info["build"] = {"error": f"native kernels not built ({exc})"}
    try:
        import onnxruntime as ort

        info["onnxruntime_providers"] = ort.get_available_providers()
    except ImportError:
        info["onnxruntime_providers"] = []
    from ..backends import available_backends

    info["backends"] = available_backends()
    try:
        from ..device import device_report

        info["device"] = device_report()
    except Exception as exc:  # the report is informative; never fail `info` on it
        info["device"] = {"error": first_line(exc, typed=True)}
    from ..model_loading import PACKAGED, packaged_model_path

    models = {}
    for name in sorted(set(PACKAGED) - {"default_stochastic"}):
        try:
            models[name] = str(packaged_model_path(name))
        except ModelError:  # not installed with this regrisk
            models[name] = None
    info["packaged_models"] = models
    info["cpu_backend_choice"] = _cpu_choice(models.get("default"))
    info["default_calibration"] = _default_calibration()
    return info


def _default_calibration() -> dict:
    """The shipped calibration of the default model: its id, coverage and what it measured on
    its own held-out cases (the figures `estimate` would stand on)."""
    from ..calibration import store

    try:
        cal = store.load(store.default_path())
    except InputError as exc:
        return {"error": first_line(exc)}
    held = cal.payload.get("held_out", {})
    keys = ("cases", "coverage_pooled", "coverage_per_case_min", "coverage_per_case_max",
            "spearman_error_mm_nonlinear", "spearman_sigma_nonlinear")
    return {"id": cal.id, "path": str(cal.path), "coverage": cal.model.coverage,
            "features": [n for n, w in zip(cal.model.names, cal.model.weights) if w > 0],
            "held_out": {k: held.get(k) for k in keys}}


def _cpu_choice(default_path: str | None) -> dict:
    """Which CPU backend each kind of graph runs on without --backend (backends.choice)."""
    from ..backends import ModelSource
    from ..backends.choice import cpu_report

    return cpu_report(ModelSource(path=default_path) if default_path else None)


def run(args: argparse.Namespace) -> int:
    info = gather()
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    v = info["versions"]
    print(f"regrisk {v.get('regrisk')}  python {v.get('python')}  numpy {v.get('numpy')}  "
          f"onnxruntime {v.get('onnxruntime', 'missing')}  nibabel {v.get('nibabel')}")
    print("build:      " + ", ".join(f"{k}={val}" for k, val in info["build"].items()))
    print("providers:  " + ", ".join(info["onnxruntime_providers"]))
    print("backends:   " + ", ".join(info["backends"]))
    choice = info["cpu_backend_choice"]
    print("cpu choice: " + "; ".join(f"{k}: {', '.join(v) if isinstance(v, list) else v}"
                                     for k, v in choice.items() if k != "installed"))
    for name, path in info["packaged_models"].items():
        print(f"model {name}: {path or 'not installed'}")
    cal = info["default_calibration"]
    if "error" in cal:
        print(f"calibration default: {cal['error']}")
    else:
        h = cal["held_out"]
        print(f"calibration default: {cal['id']} ({cal['coverage']:.0%} bound; on "
              f"{h['cases']} held-out cases coverage {h['coverage_pooled']} pooled, "
              f"{h['coverage_per_case_min']}-{h['coverage_per_case_max']} per case, Spearman "
              f"{h['spearman_error_mm_nonlinear']} on nonlinear against sigma's "
              f"{h['spearman_sigma_nonlinear']}); cues with weight: {', '.join(cal['features'])}")
    if "device" in info:
        print("device:     " + json.dumps(info["device"], default=str))
    return 0
