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

from .errors import first_line


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


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
        return {"driver": None, "devices": [], "reason": first_line(exc, typed=True)}


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
                "name": _text(props["name"]),
                "compute_capability": f"{props['major']}.{props['minor']}",
                "memory_gib": round(props["totalGlobalMem"] / 2**30, 1),
            })
        return {"installed": True, "usable": n > 0, "version": cupy.__version__,
                "runtime": cupy.cuda.runtime.runtimeGetVersion(), "devices": devices,
                "reason": None if n else "CuPy sees no CUDA device"}
    except Exception as exc:
        return {"installed": True, "usable": False, "reason": first_line(exc, typed=True)}


def _text(name: bytes | str) -> str:
    return name.decode() if isinstance(name, bytes) else name


def gpu_name(device_id: int) -> str:
    """The CUDA device's name as CuPy reports it (CuPy must be usable)."""
    import cupy

    return _text(cupy.cuda.runtime.getDeviceProperties(device_id)["name"])


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
                "reason": first_line(exc, typed=True)}


@lru_cache(maxsize=1)
def tensorrt_status() -> dict[str, Any]:
    if not _installed("tensorrt"):
        return {"installed": False, "reason": "tensorrt not installed (pip install regrisk[trt])"}
    try:
        trt = importlib.import_module("tensorrt")
        return {"installed": True, "version": getattr(trt, "__version__", "?")}
    except Exception as exc:
        return {"installed": False, "reason": first_line(exc, typed=True)}


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
        return {"installed": True, "cuda": False, "reason": first_line(exc, typed=True)}


def _ort_cuda_missing() -> str | None:
    if onnxruntime_status()["cuda"]:
        return None
    return "onnxruntime has no CUDAExecutionProvider (pip install onnxruntime-gpu)"


def _tensorrt_missing() -> str | None:
    status = tensorrt_status()
    return None if status["installed"] else status.get("reason")


def _torch_cuda_missing() -> str | None:
    return None if torch_status()["cuda"] else "torch has no CUDA (CPU build or no GPU)"


# What each CUDA backend needs beyond the CUDA kernels (probed only when asked about).
_CUDA_BACKEND_NEEDS = {
    "onnxruntime-cuda": _ort_cuda_missing,
    "tensorrt": _tensorrt_missing,
    "torch": _torch_cuda_missing,
}


def backend_unavailable(name: str) -> str | None:
    """None when the CUDA backend ``name`` can run here, else why not (one line)."""
    ok, reason = cuda_ready()
    return _CUDA_BACKEND_NEEDS[name]() if ok else reason


def cuda_backends() -> dict[str, str | None]:
    """Each CUDA backend name -> None when it can run here, else why not."""
    return {name: backend_unavailable(name) for name in _CUDA_BACKEND_NEEDS}


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
