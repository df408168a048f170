"""CUDA backends (ONNX Runtime CUDA with IO binding, TensorRT, PyTorch) and the engine end to
end on CuPy arrays, each against the CPU path. GPU tests skip with the reason when this machine
cannot run them; the PyTorch backend is also checked on the CPU, where it runs everywhere."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the PyTorch backend tests need torch")

from regrisk import Estimator, device  # noqa: E402
from regrisk.backends import ModelSource  # noqa: E402
from regrisk.backends.onnxruntime import OnnxRuntimeBackend  # noqa: E402
from regrisk.backends.torch_backend import TorchBackend  # noqa: E402
from regrisk.card import Inputs, ModelCard  # noqa: E402
from regrisk.errors import ModelError  # noqa: E402
from builders import blob, com, com_model, oblique_affine  # noqa: E402

READY, REASON = device.cuda_ready()
BACKENDS = device.cuda_backends()
gpu = pytest.mark.skipif(not READY, reason=f"needs a CUDA GPU with CuPy and regrisk._cuda: {REASON}")


def needs(backend: str):
    why = BACKENDS.get(backend)
    return pytest.mark.skipif(why is not None, reason=f"{backend} backend cannot run here: {why}")


GRID = (20, 22, 24)
AFF = oblique_affine()


class PairNet(torch.nn.Module):
    """A small 3-D conv net, (source, target) -> (B, 3, D, H, W)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.a = torch.nn.Conv3d(2, 8, 3, padding=1)
        self.b = torch.nn.Conv3d(8, 3, 3, padding=1)

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.b(torch.nn.functional.leaky_relu(self.a(torch.cat([source, target], 1)), 0.2))


class ConcatNet(PairNet):
    """The same network on a channel-concatenated input; returns (image, field) like VoxelMorph."""

    def forward(self, pair: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        return pair[:, :1], super().forward(pair[:, :1], pair[:, 1:])


def _inputs(rng, b=3, grid=(6, 7, 5)):
    return (rng.standard_normal((b, 1, *grid)).astype(np.float32),
            rng.standard_normal((b, 1, *grid)).astype(np.float32))


def _expected(net, s, t):
    with torch.no_grad():
        return PairNet.forward(net, torch.from_numpy(s), torch.from_numpy(t)).numpy()


# --- everywhere: the PyTorch backend on the CPU, and honest import failures ------------------


def test_torch_backend_cpu_pair_layout(rng):
    net = PairNet()
    card = ModelCard(name="pair", grid=(6, 7, 5))
    be = TorchBackend(ModelSource(extra={"module": net}, label="pair"), card, threads=1,
                      options={"device": "cpu"})
    s, t = _inputs(rng)
    out = be.run({"source": s, "target": t})
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_allclose(out, _expected(net, s, t), atol=1e-6)
    assert be.xp is np and be.device == "cpu" and be.describe()["module"] == "PairNet"


def test_torch_backend_cpu_concat_layout_and_tuple_output(rng):
    net = ConcatNet()
    card = ModelCard(name="concat", grid=(6, 7, 5), inputs=Inputs(layout="concat", concat="pair"))
    src = ModelSource(extra={"module": net}, label="concat")
    s, t = _inputs(rng)
    feeds = {"pair": np.concatenate([s, t], axis=1)}
    with pytest.raises(ModelError, match="options\\['output'\\]"):
        TorchBackend(src, card, options={"device": "cpu"}).run(feeds)
    out = TorchBackend(src, card, options={"device": "cpu", "output": 1}).run(feeds)
    np.testing.assert_allclose(out, _expected(net, s, t), atol=1e-6)


def test_torch_backend_rejects_a_non_module():
    card = ModelCard(name="x", grid=(4, 4, 4))
    with pytest.raises(ModelError, match="nn.Module or a TorchScript"):
        TorchBackend(ModelSource(function=lambda s, t: s, label="f"), card, options={"device": "cpu"})


def test_torch_backend_refuses_onnx_with_the_reason(tmp_path):
    path = com_model(tmp_path / "com.onnx", GRID)
    card = ModelCard(name="x", grid=GRID)
    with pytest.raises(ModelError, match="needs the onnxruntime-cuda or tensorrt backend"):
        TorchBackend(ModelSource(path=path, label="com.onnx"), card, options={"device": "cuda"})


@pytest.mark.skipif(READY, reason="checks the failure on a machine without a usable GPU")
@pytest.mark.parametrize("name", ["onnxruntime-cuda", "tensorrt"])
def test_cuda_backends_are_refused_without_gpu(name, tmp_path):
    """Availability is a query (nothing probed at import); asked for by name anyway, the
    backend is refused with one line saying why, before its module is imported."""
    import sys

    from regrisk.backends import create_backend, unavailable
    from regrisk.card import read_card

    why = unavailable(name, "cuda")
    assert why and "\n" not in why
    module = f"regrisk.backends.{name.replace('-', '_')}"
    sys.modules.pop(module, None)
    path = com_model(tmp_path / "com.onnx", GRID)
    with pytest.raises(ModelError, match=f"backend '{name}' cannot run here: .+"):
        create_backend(ModelSource(path=path, label="com.onnx"), read_card(path), device="cuda",
                       name=name)
    assert module not in sys.modules


# --- on a GPU: each backend equals the CPU -------------------------------------------------


def _com_on_cpu(tmp_path, step: float):
    """(model source, card, source batch, target batch, the CPU backend's output) for the
    centre-of-mass graph on five sources shifted by ``step`` voxels each."""
    from regrisk.card import read_card

    path = com_model(tmp_path / "com.onnx", GRID)
    card = read_card(path)
    src = ModelSource(path=path, label="com")
    s = np.stack([blob(GRID, (9 + step * k, 10.5, 11.0)) for k in range(5)])[:, None].astype(np.float32)
    t = np.broadcast_to(blob(GRID, (10.0, 10.5, 11.0)), s.shape).astype(np.float32).copy()
    want = OnnxRuntimeBackend(src, card, threads=1).run({"source": s, "target": t})
    return src, card, s, t, want


@gpu
@needs("onnxruntime-cuda")
def test_onnxruntime_cuda_io_binding_equals_cpu(tmp_path, rng):
    import cupy as cp

    from regrisk.backends.onnxruntime_cuda import OnnxRuntimeCudaBackend

    src, card, s, t, want = _com_on_cpu(tmp_path, step=1.0)
    be = OnnxRuntimeCudaBackend(src, card)
    with cp.cuda.Stream(non_blocking=True):  # inputs made on a side stream: ordering by events
        got = be.run({"source": cp.asarray(s) * 1.0, "target": cp.asarray(t) + 0.0})
        got_host = cp.asnumpy(got)
    assert isinstance(got, cp.ndarray) and got.shape == want.shape
    np.testing.assert_allclose(got_host, want, atol=1e-4)
    assert be.describe()["io_binding"] is True


@gpu
@needs("tensorrt")
def test_tensorrt_dynamic_batch_in_chunks_equals_cpu(tmp_path, rng):
    import cupy as cp

    from regrisk.backends.tensorrt import TensorRTBackend

    src, card, s, t, want = _com_on_cpu(tmp_path, step=0.5)
    be = TensorRTBackend(src, card, options={"max_batch": 2, "opt_batch": 2})
    got = be.run({"source": cp.asarray(s), "target": cp.asarray(t)})  # 5 = 2 + 2 + 1
    np.testing.assert_allclose(cp.asnumpy(got), want, atol=1e-4)


@gpu
@needs("torch")
def test_torch_backend_cuda_dlpack_equals_cpu(rng):
    import cupy as cp

    net = PairNet()
    card = ModelCard(name="pair", grid=(6, 7, 5))
    s, t = _inputs(rng)
    want = _expected(net, s, t)
    be = TorchBackend(ModelSource(extra={"module": net}, label="pair"), card,
                      options={"device": "cuda"})
    with cp.cuda.Stream(non_blocking=True):
        got = be.run({"source": cp.asarray(s), "target": cp.asarray(t)})
        got_host = cp.asnumpy(got)
    assert isinstance(got, cp.ndarray)
    np.testing.assert_allclose(got_host, want, atol=1e-4)


# --- on a GPU: the engine end to end equals the CPU engine -----------------------------------


def _com_xp(src, tgt):
    """Centre-of-mass registration written for NumPy and CuPy alike (a callable model)."""
    import cupy as cp

    xp = cp.get_array_module(src)
    shape = src.shape[2:]
    g = xp.stack(xp.meshgrid(*[xp.arange(n, dtype=xp.float32) for n in shape], indexing="ij"))

    def c(v):  # (B,1,D,H,W) -> (B,3)
        return (v * g[None]).sum(axis=(2, 3, 4)) / v.sum(axis=(2, 3, 4))

    u = (c(src) - c(tgt)).astype(xp.float32)
    return xp.ascontiguousarray(xp.broadcast_to(u[:, :, None, None, None], (src.shape[0], 3, *shape)))


@gpu
@pytest.mark.parametrize("perturbation", ["paper", "affine", "bspline"])
def test_engine_cuda_equals_cpu_for_the_same_seed(perturbation):
    S = blob(GRID, (9.0, 11.5, 12.5))
    T = blob(GRID, (10.0, 10.5, 11.0))
    # Sanity: the xp-agnostic callable is the centre-of-mass model.
    np.testing.assert_allclose(_com_xp(S[None, None], T[None, None])[0, :, 0, 0, 0],
                               com(S) - com(T), atol=1e-3)
    kw = dict(samples=12, perturbation=perturbation, seed=3)
    cpu = Estimator(_com_xp, device="cpu").estimate((S, AFF), (T, AFF), **kw)
    cuda = Estimator(_com_xp, device="cuda").estimate((S, AFF), (T, AFF), **kw)
    assert cpu.uncertainty.max() > 0.01  # the comparison is not between two zero maps
    for name in ("uncertainty", "uncertainty_axes", "displacement", "mean_displacement",
                 "warped_source"):
        a, b = getattr(cpu, name), getattr(cuda, name)
        assert isinstance(b, np.ndarray) and a.shape == b.shape, name
        np.testing.assert_allclose(b, a, atol=2e-4, rtol=1e-4, err_msg=name)


@gpu
@needs("onnxruntime-cuda")
def test_engine_onnxruntime_cuda_equals_cpu(tmp_path):
    path = com_model(tmp_path / "com.onnx", GRID)
    S = blob(GRID, (9.0, 11.5, 12.5))
    T = blob(GRID, (10.0, 10.5, 11.0))
    kw = dict(samples=10, perturbation="paper", seed=7)
    cpu = Estimator(str(path), device="cpu").estimate((S, AFF), (T, AFF), **kw)
    cuda = Estimator(str(path), device="cuda", backend="onnxruntime-cuda").estimate((S, AFF), (T, AFF), **kw)
    assert cuda.summary["backend"]["backend"] == "onnxruntime-cuda"
    np.testing.assert_allclose(cuda.uncertainty, cpu.uncertainty, atol=2e-3, rtol=1e-3)
    np.testing.assert_allclose(cuda.displacement, cpu.displacement, atol=2e-3, rtol=1e-3)


# --- the torch backend through the engine's registry --------------------------------------------


def _flow_net() -> PairNet:
    net = PairNet(seed=1)
    with torch.no_grad():  # fields of a few tenths of a voxel: a non-trivial map
        net.b.weight.mul_(0.3)
    return net.eval()


def test_engine_torch_backend_cpu_equals_callable():
    S = blob(GRID, (9.0, 11.5, 12.5))
    T = blob(GRID, (10.0, 10.5, 11.0))
    net = _flow_net()

    def as_callable(src, tgt):
        with torch.no_grad():
            return net(torch.from_numpy(src), torch.from_numpy(tgt)).numpy()

    kw = dict(samples=6, perturbation="paper", seed=2)
    a = Estimator(net, device="cpu", backend="torch").estimate((S, AFF), (T, AFF), **kw)
    b = Estimator(as_callable, device="cpu").estimate((S, AFF), (T, AFF), **kw)
    assert a.summary["backend"]["backend"] == "torch"
    assert a.uncertainty.max() > 0.01
    np.testing.assert_allclose(a.uncertainty, b.uncertainty, atol=1e-6)


@gpu
@needs("torch")
def test_engine_torch_backend_cuda_equals_cpu():
    S = blob(GRID, (9.0, 11.5, 12.5))
    T = blob(GRID, (10.0, 10.5, 11.0))
    net = _flow_net()
    kw = dict(samples=8, perturbation="paper", seed=4)
    cpu = Estimator(net, device="cpu", backend="torch").estimate((S, AFF), (T, AFF), **kw)
    cuda = Estimator(net, device="cuda", backend="torch",
                     backend_options={"tf32": False}).estimate((S, AFF), (T, AFF), **kw)
    assert cuda.summary["backend"]["device"] == "cuda"
    for name in ("uncertainty", "uncertainty_axes", "displacement", "mean_displacement"):
        np.testing.assert_allclose(getattr(cuda, name), getattr(cpu, name), atol=1e-3, rtol=1e-3,
                                   err_msg=name)
