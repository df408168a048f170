"""Exporters: turn PyTorch registration networks into ONNX graphs (and TensorRT engines) that
carry a regrisk model card, with a parity check against the original module.

Modules: ``common`` (export, parity, checkpoints, card), ``unigradicon``, ``voxelmorph``,
``torch_module`` (any ``package.module:factory``), ``tensorrt`` (engines from ONNX).
Nothing here imports torch at import time; each exporter imports it when called.
"""

from __future__ import annotations

__all__ = ["common", "unigradicon", "voxelmorph", "torch_module", "tensorrt"]
