"""CPU backends against ONNX Runtime on small real graphs: OpenVINO whole, staged (5-D
GridSample cut out and run by the warp kernel) and rewritten (GridSample as gathers); the
automatic choice between them, its fallback, and the one-line errors of a forced backend."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from builders import com_model, warp_model

from regrisk import Estimator, model_loading
from regrisk.backends import create_backend, unavailable
from regrisk.backends.gridsample import rewrite_gridsample
from regrisk.errors import ModelError

GRID = (12, 10, 14)
needs_openvino = pytest.mark.skipif(unavailable("openvino") is not None,
                                    reason=f"openvino: {unavailable('openvino')}")


def _pair(rng: np.random.Generator, batch: int) -> dict[str, np.ndarray]:
    return {n: rng.random((batch, 1, *GRID), dtype=np.float32) for n in ("source", "target")}


def _run(path, name: str, feeds: dict, **options) -> tuple[np.ndarray, dict]:
    resolved = model_loading.resolve(str(path))
    with create_backend(resolved.source, resolved.card, name=name, threads=1,
                        options=options) as backend:
        return backend.run(feeds), backend.describe()


@needs_openvino
@pytest.mark.parametrize("layout, batch", [("pair", "B"), ("concat", 2)])
def test_openvino_matches_onnxruntime(tmp_path, rng, layout, batch) -> None:
    path = com_model(tmp_path / "com.onnx", GRID, layout=layout, batch=batch, units="unit",
                     channel_order="xyz")
    sizes = (1, 3, 2) if batch == "B" else (2,)
    for b in sizes:
        feeds = _pair(rng, b)
        if layout == "concat":
            feeds = {"pair": np.concatenate([feeds["source"], feeds["target"]], axis=1)}
        want, _ = _run(path, "onnxruntime", feeds)
        got, info = _run(path, "openvino", feeds)
        assert got.shape == want.shape == (b, 3, *GRID)
        # centroids (~7 voxels) of noise differ by ~1e-3: float32 sums in another order
        # agree to a few ulps of the centroid, not of their small difference
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    assert (info["backend"], info["openvino_device"], info["precision"], info["threads"],
            info["runs_at"], info["precision_requested"]) == ("openvino", "CPU", "f32", 1, "f32", "auto")
    assert info["fixed_batch"] == (2 if batch == 2 else None)


@needs_openvino
def test_openvino_compiles_once_per_batch(tmp_path, rng) -> None:
    path = com_model(tmp_path / "com.onnx", GRID)
    resolved = model_loading.resolve(str(path))
    with create_backend(resolved.source, resolved.card, name="openvino", threads=2,
                        options={"lanes": 1}) as backend:
        first = backend._model(1)
        for b in (1, 4, 1, 4):
            backend.run(_pair(rng, b))
        assert backend._model(1) is first
        assert backend.describe()["compiled_batches"] == [1, 4]
        # the thread count reaches the compiled model, not only the summary
        assert int(first.compiled.get_property("INFERENCE_NUM_THREADS")) == 2
        assert int(first.compiled.get_property("NUM_STREAMS")) == 1


@needs_openvino
@pytest.mark.parametrize("model", ["com", "warp"])
def test_openvino_lanes_run_images_concurrently(tmp_path, rng, model) -> None:
    """Two lanes: one compilation at batch 1 with a stream per lane, each image of a batch on
    one lane; the same outputs as one lane, bit for bit, for a whole graph and a staged one, at
    every batch size. "auto" at 2 threads: two lanes for the staged graph, one for the whole."""
    path = (com_model(tmp_path / "com.onnx", GRID) if model == "com"
            else warp_model(tmp_path / "warp.onnx", GRID, padding="border", align_corners=True))
    resolved = model_loading.resolve(str(path))
    make = lambda lanes: create_backend(resolved.source, resolved.card, name="openvino",  # noqa: E731
                                        threads=2, options={"lanes": lanes})
    with make("auto") as auto:
        assert auto.describe()["lanes"] == (2 if model == "warp" else 1)
    with make(2) as two, make(1) as one:
        for b in (1, 5, 2):
            feeds = _pair(rng, b)
            np.testing.assert_array_equal(two.run(feeds), one.run(feeds))
        info = two.describe()
        assert (info["lanes"], info["compiled_batches"]) == (2, [1])
        compiled = two._model(1) if model == "com" else two.staged.compiled[0]
        assert int(compiled.compiled.get_property("NUM_STREAMS")) == 2
        assert one.describe()["lanes"] == 1
    with pytest.raises(ModelError, match="lanes 3"):
        create_backend(resolved.source, resolved.card, name="openvino", threads=2,
                       options={"lanes": 3})


@needs_openvino
@pytest.mark.parametrize("padding, align", [("border", True), ("zeros", True),
                                            ("border", False), ("zeros", False)])
def test_gridsample_graph_staged_and_rewritten(tmp_path, rng, padding, align) -> None:
    path = warp_model(tmp_path / "warp.onnx", GRID, padding=padding, align_corners=align)
    for b in (1, 3):
        feeds = _pair(rng, b)
        want, _ = _run(path, "onnxruntime", feeds)
        assert np.abs(want).max() > 1.0  # the fields move by voxels: sampling is exercised
        staged, info = _run(path, "openvino", feeds)
        np.testing.assert_allclose(staged, want, rtol=0, atol=2e-5)
        assert (info["gridsample"], info["stages"], info["samples"]) == ("staged", 2, 2)
        assert info["compiled_batches"] == [1]  # staged graphs run one image at a time
        assert info["runs_at"] == "f32"
        rewritten, info = _run(path, "openvino", feeds, gridsample="rewrite")
        np.testing.assert_allclose(rewritten, want, rtol=0, atol=2e-5)
        assert info["gridsample"] == "rewrite"


@needs_openvino
def test_compile_cache_folder(tmp_path, rng, monkeypatch) -> None:
    """Compiled models go to the cache folder asked for, else the user's cache folder; '' turns
    the cache off, and a folder that cannot be made leaves it off instead of failing."""
    path = com_model(tmp_path / "com.onnx", GRID)
    asked = tmp_path / "asked"
    _, info = _run(path, "openvino", _pair(rng, 1), cache_dir=str(asked))
    assert info["cache_dir"] == str(asked) and any(asked.iterdir())
    monkeypatch.setenv("REGRISK_CACHE_DIR", str(tmp_path / "env"))
    _, info = _run(path, "openvino", _pair(rng, 1))
    assert info["cache_dir"] == str(tmp_path / "env" / "openvino")
    assert any((tmp_path / "env" / "openvino").iterdir())
    _, info = _run(path, "openvino", _pair(rng, 1), cache_dir="")
    assert info["cache_dir"] is None
    monkeypatch.setenv("REGRISK_CACHE_DIR", "/sys/regrisk-cannot-be-here")  # refused to root too
    got, info = _run(path, "openvino", _pair(rng, 1))
    assert info["cache_dir"] is None and np.isfinite(got).all()


def test_gridsample_rewrite_in_onnxruntime(tmp_path, rng) -> None:
    """The rewrite alone, in ONNX Runtime: no GridSample left, same outputs as the native op."""
    path = warp_model(tmp_path / "warp.onnx", GRID, padding="zeros", align_corners=False)
    model = onnx.load(str(path))
    assert rewrite_gridsample(model) == 2
    assert "GridSample" not in {n.op_type for n in model.graph.node}
    onnx.checker.check_model(model)
    rewritten = tmp_path / "rewritten.onnx"
    onnx.save(model, str(rewritten))
    feeds = _pair(rng, 2)
    want, _ = _run(path, "onnxruntime", feeds)
    got, _ = _run(rewritten, "onnxruntime", feeds)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5)


@needs_openvino
def test_automatic_choice(tmp_path) -> None:
    """OpenVINO first for every graph: whole for convolution graphs, staged for one that warps
    inside (measured faster than ONNX Runtime's whole graph on the default model)."""
    conv = com_model(tmp_path / "com.onnx", GRID)
    warp = warp_model(tmp_path / "warp.onnx", GRID)
    for path, staged in ((conv, False), (warp, True)):
        with Estimator(str(path), threads=1) as est:
            info = est.runner.describe()
            assert info["backend"] == "openvino" and info["chosen"] == "automatic"
            assert (info.get("gridsample") == "staged") == staged


@needs_openvino
def test_fallback_when_openvino_cannot_take_it(tmp_path) -> None:
    """OpenVINO failing to load (here: a device it does not have) is no failure of the run:
    ONNX Runtime runs it and the summary records why OpenVINO was skipped."""
    path = com_model(tmp_path / "com.onnx", GRID)
    src = np.zeros(GRID, np.float32)
    src[4:8, 3:7, 5:9] = 1.0
    with Estimator(str(path), threads=1, backend_options={"openvino_device": "NO_SUCH"}) as est:
        res = est.estimate((src, np.eye(4)), (np.roll(src, 1, 0), np.eye(4)), samples=2,
                           perturbation="translation")
    backend = res.summary["backend"]
    assert backend["backend"] == "onnxruntime"
    assert "NO_SUCH" in backend["skipped"]["openvino"]


@needs_openvino
def test_forced_openvino_refuses_in_one_line(tmp_path) -> None:
    path = warp_model(tmp_path / "nearest.onnx", GRID, mode="nearest")
    with pytest.raises(ModelError, match="nearest") as err:
        Estimator(str(path), backend="openvino", threads=1)
    assert "\n" not in str(err.value)
    with pytest.raises(ModelError, match="precision"):
        Estimator(str(com_model(tmp_path / "c.onnx", GRID)), backend="openvino",
                  backend_options={"precision": "int3"})


def test_unknown_or_absent_backend_refuses(tmp_path) -> None:
    path = com_model(tmp_path / "com.onnx", GRID)
    with pytest.raises(ModelError, match="unknown backend 'nosuch'"):
        Estimator(str(path), backend="nosuch")
    if unavailable("tensorrt", "cuda") is not None:  # the CPU machines: no GPU or no tensorrt
        with pytest.raises(ModelError, match="backend 'tensorrt' cannot run here") as err:
            Estimator(str(path), backend="tensorrt", device="cuda")
        assert "\n" not in str(err.value)


def _cli_files(tmp_path) -> list[str]:
    from builders import blob, write_nifti

    src = write_nifti(tmp_path / "s.nii.gz", blob(GRID, (5.0, 5.5, 7.0)) * 100, np.eye(4))
    tgt = write_nifti(tmp_path / "t.nii.gz", blob(GRID, (6.0, 4.5, 6.5)) * 100, np.eye(4))
    model = com_model(tmp_path / "com.onnx", GRID)
    return ["estimate", "--source", str(src), "--target", str(tgt), "--model", str(model),
            "--samples", "2", "--perturbation", "translation", "--quiet", "--threads", "1"]


@needs_openvino
@pytest.mark.parametrize("forced", [None, "onnxruntime", "openvino"])
def test_cli_backend_in_summary(tmp_path, forced) -> None:
    import json

    from regrisk.cli import main

    out = tmp_path / "out"
    extra = ["--backend", forced] if forced else []
    assert main(_cli_files(tmp_path) + ["--out", str(out)] + extra) == 0
    backend = json.loads((out / "summary.json").read_text())["backend"]
    assert backend["backend"] == (forced or "openvino")
    assert backend["chosen"] == ("requested" if forced else "automatic")


@pytest.mark.parametrize("extra, message", [
    (["--backend", "nosuch"], "invalid choice: 'nosuch'"),
    (["--backend", "onnxruntime", "--inference-precision", "bf16"], "OpenVINO precision"),
])
def test_cli_backend_refusals(tmp_path, capsys, extra, message) -> None:
    from regrisk.cli import main

    out = tmp_path / "out"
    assert main(_cli_files(tmp_path) + ["--out", str(out)] + extra) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_info_reports_the_cpu_choice(capsys, tmp_path) -> None:
    import json

    from regrisk.cli import main

    assert main(["info", "--json"]) == 0
    choice = json.loads(capsys.readouterr().out)["cpu_backend_choice"]
    installed = [n for n, ok in choice["installed"].items() if ok == "yes"]
    assert choice["convolution graphs"][0] == installed[0]
    assert choice["default model"] == installed[0]  # staged in OpenVINO when it is installed
    assert choice["graphs with 5-D GridSample"][0].startswith(installed[0])
    if "openvino" in installed:  # what backends made with the default thread count run
        lanes = {}
        for kind, path in (("staged", warp_model(tmp_path / "warp.onnx", GRID)),
                           ("whole", com_model(tmp_path / "com.onnx", GRID))):
            resolved = model_loading.resolve(str(path))
            with create_backend(resolved.source, resolved.card, name="openvino") as backend:
                lanes[kind] = backend.describe()["lanes"]
        assert choice["openvino lanes"].startswith(f"graphs staged at 5-D GridSample {lanes['staged']} (")
        assert choice["openvino lanes"].endswith(f"other graphs {lanes['whole']}")
        assert "upsample_fold" in choice["openvino graph rewrites"]
        assert "native_head" in choice["openvino graph rewrites"]
