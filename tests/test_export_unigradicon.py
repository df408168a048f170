"""uniGradICON export: random-init network at a small grid (each side >= 65: two half-resolution
levels feed a five-stage U-Net), compared with the untouched icon_registration network."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxscript")
icon = pytest.importorskip("icon_registration")
ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from icon_registration import networks  # noqa: E402

from regrisk import conventions  # noqa: E402
from regrisk.card import read_card  # noqa: E402
from regrisk.exporters.common import ExportError  # noqa: E402
from regrisk.exporters.unigradicon import export_unigradicon  # noqa: E402

GRID = (65, 72, 80)  # not cubic: a swapped axis would show
SEED = 5


@pytest.fixture(scope="module")
def ugi(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("ugi") / "ugi.onnx"
    export_unigradicon(path, random_init=True, grid=GRID, seed=SEED, verbose=False)
    return path


def _reference(grid=GRID, seed: int = SEED):
    """The same random network, assembled here as unigradicon.make_network does, evaluated with
    icon_registration's own forward (stored identity maps, its own warp)."""
    torch.manual_seed(seed)
    inner = icon.FunctionFromVectorField(networks.tallUNet2(dimension=3))
    for _ in range(2):
        inner = icon.TwoStepRegistration(icon.DownsampleRegistration(inner, dimension=3),
                                         icon.FunctionFromVectorField(networks.tallUNet2(dimension=3)))
    inner = icon.TwoStepRegistration(inner, icon.FunctionFromVectorField(networks.tallUNet2(dimension=3)))
    inner.assign_identity_map([1, 1, *grid])
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in inner.named_parameters():
            if name.endswith("lastConv.weight"):
                p.copy_(torch.randn(p.shape, generator=gen) * 1e-2)
    return inner.eval()


def test_map_matches_icon_registration(ugi, rng) -> None:
    net = _reference()
    src = rng.random((1, 1, *GRID), dtype=np.float32)
    tgt = rng.random((1, 1, *GRID), dtype=np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(src), torch.from_numpy(tgt))(net.identity_map).numpy()
    got = ort.InferenceSession(str(ugi)).run(None, {"source": src, "target": tgt})[0]
    assert got.shape == (1, 3, *GRID)
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
    # a map in unit coordinates: identity plus a displacement of some voxels, not the identity
    u = conventions.to_canonical(got, read_card(ugi).output, GRID)
    assert 0.3 < np.abs(u).max() < 20


def test_card_graph_and_no_baked_grids(ugi) -> None:
    card = read_card(ugi)
    assert card.grid == GRID and card.batch == "dynamic"
    assert (card.output.kind, card.output.units, card.output.channel_order,
            card.output.align_corners) == ("map", "unit", "ijk", True)
    assert (card.preprocess.method, card.preprocess.low, card.preprocess.high) == \
        ("percentile", 0.0, 99.0)
    assert card.resample.method == "stretch"
    par = card.provenance["parity"]
    assert par["rel"] <= 1e-4 and par["batch_sizes"] == [1, 2]
    assert "icon_registration" in card.provenance["versions"]
    model = onnx.load(str(ugi))
    assert model.opset_import[0].version >= 20
    assert [n.op_type for n in model.graph.node].count("GridSample") == 11
    # stored tensors are the weights: nothing near a grid's size (3 x 33 x 36 x 40 at the
    # coarsest level) and no ScatterElements left from in-place channel writes
    n_params = sum(p.numel() for p in _reference().state_dict().values())
    stored = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    assert stored <= n_params + 10_000
    assert max(int(np.prod(t.dims)) for t in model.graph.initializer
               if "weight" not in t.name) < 3 * 17 * 18 * 20
    assert "ScatterElements" not in {n.op_type for n in model.graph.node}


def test_estimate_runs_on_exported_unigradicon(ugi, rng) -> None:
    from regrisk import Estimator

    shape = (40, 44, 36)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")).astype(np.float32)
    c = np.array(shape, np.float32)[:, None, None, None] / 2
    src = np.exp(-((idx - c) ** 2).sum(0) / 120.0).astype(np.float32)
    tgt = np.exp(-((idx - c - 1.5) ** 2).sum(0) / 100.0).astype(np.float32)
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    res = Estimator(str(ugi), threads=2).estimate((src, affine), (tgt, affine), samples=2,
                                                  perturbation="translation", seed=0)
    assert res.uncertainty.shape == shape and np.all(np.isfinite(res.uncertainty))
    assert res.uncertainty.max() > 0 and res.displacement.shape == (3, *shape)


def test_small_grid_refused(tmp_path) -> None:
    with pytest.raises(ExportError, match="at least 65"):
        export_unigradicon(tmp_path / "u.onnx", random_init=True, grid=(64, 80, 80))
    assert list(tmp_path.iterdir()) == []


def test_staged_openvino_matches_eager(ugi, rng) -> None:
    """OpenVINO has no 5-D GridSample: the cascade runs staged (its U-Nets and map arithmetic
    in OpenVINO, its 11 warps by regrisk's warp kernel) and matches the eager network."""
    from regrisk import model_loading
    from regrisk.backends import create_backend, unavailable

    if unavailable("openvino") is not None:
        pytest.skip(f"openvino: {unavailable('openvino')}")
    net = _reference()
    src = rng.random((2, 1, *GRID), dtype=np.float32)
    tgt = rng.random((2, 1, *GRID), dtype=np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(src), torch.from_numpy(tgt))(net.identity_map).numpy()
    resolved = model_loading.resolve(str(ugi))
    with create_backend(resolved.source, resolved.card, name="openvino", threads=2) as backend:
        got = backend.run({"source": src, "target": tgt})
        info = backend.describe()
    assert (info["gridsample"], info["samples"]) == ("staged", 11)
    assert got.shape == want.shape == (2, 3, *GRID)
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
