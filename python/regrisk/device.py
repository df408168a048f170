"""What this machine can run: GPU, CuPy, the CUDA kernels, ONNX Runtime providers, TensorRT,
PyTorch. Every probe is defensive (never raises) and imports nothing heavy until asked, so
``import regrisk.device`` is free on a machine without a GPU. ``device_report()`` feeds
``regrisk info``."""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib
import importlib.util
from functools import lru_cache
from typing import Any


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


@lru_cache(maxsize=1)
def driver_devices() -> dict[str, Any]:
    """NVIDIA driver view through libcuda (no CuPy needed): driver version and device names."""
    names = ["libcuda.so.1", "libcuda.so", ctypes.util.find_library("cuda"), "nvcuda.dll"]
    lib = None
    for name in names:
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError:
            continue
    if lib is None:
        return {"driver": None, "devices": [], "reason": "no NVIDIA driver (libcuda not found)"}
    try:
        if lib.cuInit(0) != 0:
            return {"driver": None, "devices": [], "reason": "libcuda present but cuInit failed (no usable GPU)"}
        version = ctypes.c_int()
        lib.cuDriverGetVersion(ctypes.byref(version))
        count = ctypes.c_int()
        if lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
            count.value = 0
        devices = []
        for i in range(count.value):
            dev = ctypes.c_int()
            lib.cuDeviceGet(ctypes.byref(dev), i)
            buf = ctypes.create_string_buffer(256)
            lib.cuDeviceGetName(buf, 256, dev)
            devices.append({"index": i, "name": buf.value.decode(errors="replace")})
        v = version.value
        return {"driver": f"{v // 1000}.{(v % 1000) // 10}", "devices": devices, "reason": None}
    except Exception as exc:  # a broken driver install must not break `regrisk info`
        return {"driver": None, "devices": [], "reason": _short(exc)}


def gpu_present() -> bool:
    """True when the NVIDIA driver reports at least one device."""
    return bool(driver_devices()["devices"])


@lru_cache(maxsize=1)
def cupy_status() -> dict[str, Any]:
    """Is CuPy importable, and can it see a device?"""
    if not _installed("cupy"):
        return {"installed": False, "usable": False, "reason": "CuPy not installed (pip install regrisk[gpu])"}
    try:
        import cupy

        n = cupy.cuda.runtime.getDeviceCount()
        devices = []
        for i in range(n):
            props = cupy.cuda.runtime.getDeviceProperties(i)
            devices.append({
                "index": i,
                "name": props["name"].decode() if isinstance(props["name"], bytes) else props["name"],
                "compute_capability": f"{props['major']}.{props['minor']}",
                "memory_gib": round(props["totalGlobalMem"] / 2**30, 1),
            })
        return {"installed": True, "usable": n > 0, "version": cupy.__version__,
                "runtime": cupy.cuda.runtime.runtimeGetVersion(), "devices": devices,
                "reason": None if n else "CuPy sees no CUDA device"}
    except Exception as exc:
        return {"installed": True, "usable": False, "reason": _short(exc)}


def cupy_usable() -> bool:
    """True when CuPy imports and sees at least one device (the CUDA path can run)."""
    return bool(cupy_status()["usable"])


def cuda_module_built() -> bool:
    """True when regrisk._cuda (the CUDA kernels) was compiled into this install."""
    return _installed("regrisk._cuda")


@lru_cache(maxsize=1)
def onnxruntime_status() -> dict[str, Any]:
    if not _installed("onnxruntime"):
        return {"installed": False, "providers": [], "cuda": False, "tensorrt": False}
    try:
        import onnxruntime

        providers = list(onnxruntime.get_available_providers())
        return {"installed": True, "version": onnxruntime.__version__, "providers": providers,
                "cuda": "CUDAExecutionProvider" in providers,
                "tensorrt": "TensorrtExecutionProvider" in providers}
    except Exception as exc:
        return {"installed": True, "providers": [], "cuda": False, "tensorrt": False,
                "reason": _short(exc)}


def ort_cuda_available() -> bool:
    """True when onnxruntime offers the CUDA execution provider (onnxruntime-gpu)."""
    return bool(onnxruntime_status()["cuda"])


@lru_cache(maxsize=1)
def tensorrt_status() -> dict[str, Any]:
    if not _installed("tensorrt"):
        return {"installed": False, "reason": "tensorrt not installed (pip install regrisk[trt])"}
    try:
        trt = importlib.import_module("tensorrt")
        return {"installed": True, "version": getattr(trt, "__version__", "?")}
    except Exception as exc:
        return {"installed": False, "reason": _short(exc)}


def tensorrt_available() -> bool:
    return bool(tensorrt_status()["installed"])


@lru_cache(maxsize=1)
def torch_status() -> dict[str, Any]:
    if not _installed("torch"):
        return {"installed": False, "cuda": False}
    try:
        import torch

        cuda = bool(torch.cuda.is_available())
        return {"installed": True, "version": torch.__version__, "cuda": cuda,
                "cuda_version": torch.version.cuda,
                "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
                if cuda else []}
    except Exception as exc:
        return {"installed": True, "cuda": False, "reason": _short(exc)}


def cuda_backends() -> dict[str, str | None]:
    """Each CUDA backend name -> None when it can run here, else why not."""
    gpu = None if cupy_usable() else (cupy_status().get("reason") or "no usable GPU")
    kernels = None if cuda_module_built() else "regrisk._cuda not built (no nvcc at install time)"
    base = gpu or kernels
    ort = onnxruntime_status()
    trt = tensorrt_status()
    return {
        "onnxruntime-cuda": base or (None if ort["cuda"] else "onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)"),
        "tensorrt": base or (None if trt["installed"] else trt.get("reason")),
        "torch": base or (None if torch_status()["cuda"] else "torch has no CUDA (CPU build or no GPU)"),
    }


def cuda_ready() -> tuple[bool, str]:
    """(True, "") when CuPy arrays can run on the CUDA kernels here, else (False, reason)."""
    if not cupy_usable():
        return False, cupy_status().get("reason") or "no usable GPU"
    if not cuda_module_built():
        return False, "regrisk._cuda not built (no nvcc when regrisk was installed)"
    return True, ""


def device_report() -> dict[str, Any]:
    """Everything above as one JSON-serialisable dict (for ``regrisk info``)."""
    ok, reason = cuda_ready()
    return {
        "cuda_ready": ok,
        "cuda_reason": reason or None,
        "driver": driver_devices(),
        "cupy": cupy_status(),
        "cuda_kernels_built": cuda_module_built(),
        "onnxruntime": onnxruntime_status(),
        "tensorrt": tensorrt_status(),
        "torch": torch_status(),
        "cuda_backends": cuda_backends(),
    }
