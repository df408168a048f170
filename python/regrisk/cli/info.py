"""``regrisk info``: versions, native build flags, ONNX Runtime providers, devices."""

from __future__ import annotations

import argparse
import json

from ..errors import ModelError, first_line


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
    return info


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
    if "device" in info:
        print("device:     " + json.dumps(info["device"], default=str))
    return 0
