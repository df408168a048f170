"""Exporters: VoxelMorph (monolithic and staged), any module through ``export torch``, checkpoint
safety and all-or-nothing outputs. Real exports (torch.onnx dynamo), real ONNX Runtime
sessions, real estimates; random-init networks at small grids."""

from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxscript")
vxm = pytest.importorskip("voxelmorph")
ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from regrisk import kernels  # noqa: E402
from regrisk.card import read_card  # noqa: E402
from regrisk.cli import main  # noqa: E402
from regrisk.exporters.common import (CheckpointError, ExportError, load_checkpoint,  # noqa: E402
                                      load_weights)
from regrisk.exporters.voxelmorph import export_voxelmorph  # noqa: E402

GRID = (32, 32, 64)  # neurite's BasicUNet pools five times: multiples of 32; not cubic on purpose
SEED = 3


@pytest.fixture(scope="module")
def vxm_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vxm")
    out = {}
    for form in ("monolithic", "staged"):
        path = root / f"vxm_{form}.onnx"
        export_voxelmorph(path, random_init=True, grid=GRID, form=form, seed=SEED, verbose=False)
        out[form] = path
    return out


def _vxm_reference(seed: int = SEED) -> "torch.nn.Module":
    """The same random network built straight from the voxelmorph package (the exporter seeds
    torch, builds VxmPairwise, then draws the flow layer from a generator seeded likewise)."""
    torch.manual_seed(seed)
    net = vxm.nn.models.VxmPairwise(ndim=3, source_channels=1, target_channels=1,
                                    nb_features=[16] * 5, integration_steps=5)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w = net.flow_layer.conv0.weight
        w.copy_(torch.randn(w.shape, generator=gen) * 3.0)
    return net.eval()


def _pair(rng: np.random.Generator, batch: int, grid=GRID) -> tuple[np.ndarray, np.ndarray]:
    return (rng.random((batch, 1, *grid), dtype=np.float32),
            rng.random((batch, 1, *grid), dtype=np.float32))


def _blobs(rng: np.random.Generator, shape: tuple[int, int, int]) -> np.ndarray:
    """A smooth test volume: a few Gaussian blobs."""
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")).astype(np.float32)
    vol = np.zeros(shape, np.float32)
    for _ in range(4):
        c = rng.uniform(0.25, 0.75, 3) * np.array(shape)
        s = rng.uniform(0.1, 0.2) * min(shape)
        vol += np.exp(-((idx - c[:, None, None, None]) ** 2).sum(0) / (2 * s * s))
    return vol


def test_voxelmorph_graph_matches_pytorch_on_fresh_inputs(vxm_models, rng) -> None:
    """Independent of the exporter's own check: new inputs, a network rebuilt from the package."""
    net = _vxm_reference()
    src, tgt = _pair(rng, 3)
    with torch.no_grad():
        disp = net(torch.from_numpy(src), torch.from_numpy(tgt)).numpy()
        vel = net(torch.from_numpy(src), torch.from_numpy(tgt), return_field_type="velocity").numpy()
    assert np.abs(disp).max() > 0.5  # random init gives fields of about a voxel, not zeros
    for form, want in (("monolithic", disp), ("staged", vel)):
        sess = ort.InferenceSession(str(vxm_models[form]), providers=["CPUExecutionProvider"])
        got = sess.run(None, {"source": src, "target": tgt})[0]
        assert got.shape == (3, 3, *GRID)
        assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def test_voxelmorph_cards_and_recorded_parity(vxm_models) -> None:
    mono, staged = read_card(vxm_models["monolithic"]), read_card(vxm_models["staged"])
    assert mono.grid == GRID and staged.grid == GRID
    assert (mono.output.kind, mono.output.units, mono.output.channel_order) == \
        ("displacement", "voxel", "ijk")
    assert (staged.output.kind, staged.output.steps) == ("velocity", 5)
    for card in (mono, staged):
        par = card.provenance["parity"]
        assert par["rel"] <= 1e-4 and par["tolerance"] == 1e-4 and par["batch_sizes"] == [1, 2]
        assert card.provenance["versions"]["voxelmorph"] == "0.3.4"
        assert card.provenance["weights"] == {"random_init": True, "seed": SEED}
        assert card.batch == "dynamic"
    ops = {form: [n.op_type for n in onnx.load(str(p)).graph.node] for form, p in vxm_models.items()}
    assert ops["monolithic"].count("GridSample") == 5  # five squarings in the graph
    assert "GridSample" not in ops["staged"]


def test_staged_integrated_by_compose_equals_monolithic(vxm_models, rng) -> None:
    """u = v / 2^5, then five times u <- compose(u, field=u): zeros outside the grid, as
    VoxelMorph's integrate_vec (grid_sample zeros padding)."""
    src, tgt = _pair(rng, 2)
    feeds = {"source": src, "target": tgt}
    disp = ort.InferenceSession(str(vxm_models["monolithic"])).run(None, feeds)[0]
    vel = ort.InferenceSession(str(vxm_models["staged"])).run(None, feeds)[0]
    u = vel / np.float32(2 ** 5)
    for _ in range(5):
        u = kernels.compose(u, field=u, mode="fill", fill=0.0)
    assert np.abs(u - disp).max() <= 1e-4 * np.abs(disp).max()
    # the engine's boundary conversion, driven by the exported card, does the same
    from regrisk import conventions
    from regrisk.card import read_card

    card = read_card(vxm_models["staged"])
    canon = conventions.to_canonical(vel, card.output, card.grid)
    assert np.abs(canon - disp).max() <= 1e-4 * np.abs(disp).max()


def test_estimate_runs_on_exported_voxelmorph(vxm_models, rng, tmp_path) -> None:
    import nibabel as nib

    from regrisk import Estimator

    shape = (30, 36, 50)
    affine = np.diag([1.2, 1.0, 0.9, 1.0])
    src, tgt = _blobs(rng, shape), _blobs(rng, shape)
    for form in ("monolithic", "staged"):
        res = Estimator(str(vxm_models[form]), threads=2).estimate(
            (src, affine), (tgt, affine), samples=3, perturbation="translation", seed=1)
        assert res.uncertainty.shape == shape and np.all(np.isfinite(res.uncertainty))
        assert res.uncertainty.max() > 0
    # and the command line on NIfTI files, with the staged graph
    nib.save(nib.Nifti1Image(src, affine), tmp_path / "s.nii.gz")
    nib.save(nib.Nifti1Image(tgt, affine), tmp_path / "t.nii.gz")
    rc = main(["estimate", "--source", str(tmp_path / "s.nii.gz"), "--target",
               str(tmp_path / "t.nii.gz"), "--model", str(vxm_models["staged"]), "--out",
               str(tmp_path / "est"), "--samples", "3", "--quiet", "--threads", "2"])
    assert rc == 0
    written = list((tmp_path / "est").iterdir())
    assert any(p.name.startswith("uncertainty") for p in written)


GENERIC = '''
import torch

class TinyReg(torch.nn.Module):
    """Concatenated input, returns (warped, flow) with the flow channels last."""
    def __init__(self, width=4):
        super().__init__()
        self.a = torch.nn.Conv3d(2, width, 3, padding=1)
        self.b = torch.nn.Conv3d(width, 3, 3, padding=1)
    def forward(self, x):
        flow = self.b(torch.relu(self.a(x)))
        return x[:, :1], flow.permute(0, 2, 3, 4, 1)

def make(width=4):
    return TinyReg(width)
'''


def test_generic_module_through_export_torch(tmp_path, rng) -> None:
    (tmp_path / "tinyreg.py").write_text(GENERIC)
    spec = importlib.util.spec_from_file_location("tinyreg_ref", tmp_path / "tinyreg.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(0)
    model = tmp_path / "tiny.pt"
    ref = mod.make(width=5).eval()
    torch.save(ref.state_dict(), model)
    out = tmp_path / "tiny.onnx"
    rc = main(["export", "torch", "--module", f"{tmp_path / 'tinyreg.py'}:make", "--kwargs",
               '{"width": 5}', "--weights", str(model), "--shape", "8", "12", "16", "--out",
               str(out), "--output", "1", "--layout", "concat", "--order", "source,target",
               "--channel-axis", "last", "--channel-order", "xyz", "--name", "tiny", "--quiet"])
    assert rc == 0
    card = read_card(out)
    assert (card.name, card.grid, card.inputs.layout) == ("tiny", (8, 12, 16), "concat")
    assert (card.output.channel_axis, card.output.channel_order) == ("last", "xyz")
    assert card.provenance["weights"]["file"] == "tiny.pt"
    x = rng.random((2, 2, 8, 12, 16), dtype=np.float32)
    got = ort.InferenceSession(str(out)).run(None, {card.inputs.concat: x})[0]
    with torch.no_grad():
        want = ref(torch.from_numpy(x))[1].numpy()
    assert got.shape == (2, 8, 12, 16, 3)
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


class _Payload:
    """Any class instance pickles as a GLOBAL reference: code that unpickling would import."""

    def __reduce__(self):
        return (print, ("this would run at load time",))


def test_checkpoint_with_pickled_code_is_refused(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "hook": _Payload()}, bad)
    with pytest.raises(CheckpointError, match="pickled code"):
        load_checkpoint(bad)
    whole = tmp_path / "whole_module.pt"
    torch.save(torch.nn.Linear(2, 2), whole)  # a whole pickled module, not a state dict
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(whole)
    out = tmp_path / "v.onnx"
    rc = main(["export", "voxelmorph", "--weights", str(bad), "--grid", *map(str, GRID),
               "--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "pickled code" in err and len(err.splitlines()) == 1
    assert not out.exists() and list(tmp_path.iterdir()) and not any(
        p.name.startswith(".v.onnx") for p in tmp_path.iterdir())
    # raw pickle with a global is refused too (no torch zip container)
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(_Payload()))
    with pytest.raises(CheckpointError):
        load_checkpoint(raw)


def test_checkpoint_unwrapping_and_mismatch(tmp_path) -> None:
    lin = torch.nn.Linear(3, 2)
    path = tmp_path / "ck.pt"
    torch.save({"epoch": 4, "state_dict": lin.state_dict()}, path)
    state = load_checkpoint(path)
    assert set(state) == {"weight", "bias"}
    other = torch.nn.Linear(3, 2)
    load_weights(other, state, path)
    assert torch.equal(other.weight, lin.weight)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_weights(torch.nn.Linear(4, 2), state, path)
    with pytest.raises(CheckpointError, match="no entry"):
        load_checkpoint(path, key="model")


def test_failed_parity_leaves_nothing(tmp_path) -> None:
    out = tmp_path / "strict.onnx"
    with pytest.raises(ExportError, match="differs from PyTorch"):
        export_voxelmorph(out, random_init=True, grid=GRID, form="staged", tolerance=1e-12,
                          verbose=False)
    assert list(tmp_path.iterdir()) == []


def test_bad_requests_fail_in_one_line(tmp_path, capsys) -> None:
    rc = main(["export", "voxelmorph", "--random-init", "--grid", "30", "32", "64", "--out",
               str(tmp_path / "x.onnx")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "multiple of 32" in err and len(err.splitlines()) == 1
    rc = main(["export", "torch", "--module", "no_such_package_xyz:make", "--random-init",
               "--shape", "8", "8", "8", "--out", str(tmp_path / "y.onnx")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "cannot import" in err
    assert list(tmp_path.iterdir()) == []


def test_voxelmorph_weights_through_the_cli(tmp_path, rng) -> None:
    """A trained-like checkpoint (state dict wrapped as training scripts save it) is the one the
    graph computes with: compare against that network, not the exporter's own random init."""
    torch.manual_seed(11)
    net = vxm.nn.models.VxmPairwise(ndim=3, source_channels=1, target_channels=1,
                                    nb_features=[8, 8, 8, 8, 8], integration_steps=4)
    with torch.no_grad():
        net.flow_layer.conv0.weight.normal_(0.0, 2.0)
    net.eval()
    ckpt = tmp_path / "vxm.pt"
    torch.save({"epoch": 7, "model_state_dict": net.state_dict()}, ckpt)
    out = tmp_path / "vxm_staged.onnx"
    rc = main(["export", "voxelmorph", "--weights", str(ckpt), "--form", "staged", "--features",
               "8", "8", "8", "8", "8", "--int-steps", "4", "--grid", *map(str, GRID), "--out",
               str(out), "--quiet"])
    assert rc == 0
    card = read_card(out)
    assert card.output.steps == 4 and card.provenance["weights"]["file"] == "vxm.pt"
    src, tgt = _pair(rng, 1)
    with torch.no_grad():
        want = net(torch.from_numpy(src), torch.from_numpy(tgt),
                   return_field_type="velocity").numpy()
    got = ort.InferenceSession(str(out)).run(None, {"source": src, "target": tgt})[0]
    assert np.abs(want).max() > 0.1
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
