"""model_loading: what a user may pass as a model, and the one-line typed error for everything
else. Graphs come from tests/builders.py; each contradiction is written into the card on
purpose."""

from __future__ import annotations

import numpy as np
import pytest

from regrisk import model_loading
from regrisk.card import ModelCard, read_card
from regrisk.errors import CardError, ModelError
from builders import com_model

GRID = (8, 9, 10)


def _one_line(exc_info: pytest.ExceptionInfo) -> str:
    text = str(exc_info.value)
    assert text and "\n" not in text, text
    return text


def test_default_resolves_to_the_packaged_graph_with_its_card():
    resolved = model_loading.resolve("default")
    assert resolved.kind == "onnx" and resolved.label == "default"
    assert resolved.source.path.name == "default.onnx" and resolved.source.path.is_file()
    assert resolved.card.to_dict() == read_card(resolved.source.path).to_dict()


def test_stochastic_default_is_packaged_under_both_spellings():
    a = model_loading.packaged_model_path("default-stochastic")
    b = model_loading.packaged_model_path("default_stochastic")
    assert a == b and a.name == "default_stochastic.onnx" and a.is_file()


def test_an_onnx_path_resolves_with_the_card_from_its_metadata(tmp_path):
    path = com_model(tmp_path / "com.onnx", GRID)
    resolved = model_loading.resolve(str(path))
    assert resolved.kind == "onnx" and resolved.source.path == path
    assert resolved.card.grid == GRID and resolved.card.output.name == "flow"


def test_a_callable_is_taken_as_is_and_its_card_waits_for_the_grid():
    def net(source, target):
        return np.zeros((source.shape[0], 3, *source.shape[2:]), np.float32)

    resolved = model_loading.resolve(net)
    assert resolved.kind == "callable" and resolved.card is None and resolved.label == "net"
    assert resolved.source.function is net
    card = model_loading.callable_card((4, 5, 6), "net")
    assert card.grid == (4, 5, 6) and card.output.kind == "displacement"
    assert card.output.units == "voxel" and card.resample.method == "stretch"


@pytest.mark.parametrize("make, error, message", [
    (lambda d: d / "missing.onnx", ModelError, "no such file"),
    (lambda d: d, ModelError, "not a file"),
    (lambda d: _write(d / "empty.onnx", b""), ModelError, "empty file"),
    (lambda d: _write(d / "junk.onnx", b"\x00\x01 not a protobuf" * 10), ModelError,
     "not an ONNX model"),
])
def test_unusable_paths_are_one_line_model_errors(tmp_path, make, error, message):
    with pytest.raises(error) as info:
        model_loading.resolve(make(tmp_path))
    assert message in _one_line(info)


def test_something_that_is_no_model_at_all():
    with pytest.raises(ModelError) as info:
        model_loading.resolve(42)
    assert "expected 'default', an ONNX path or a callable" in _one_line(info)


def test_a_graph_without_a_card_says_how_to_write_one(tmp_path):
    path = com_model(tmp_path / "bare.onnx", GRID, card=False)
    with pytest.raises(CardError) as info:
        model_loading.resolve(path)
    assert "no model card" in _one_line(info) and "regrisk card" in str(info.value)


@pytest.mark.parametrize("build, card, message", [
    (dict(), {"inputs": {"layout": "pair", "source": "moving", "target": "target"}},
     "input 'moving' not in graph inputs"),
    (dict(names={"source": "s", "target": "t"}),
     {"inputs": {"layout": "pair", "source": "s", "target": "target"}},
     "input 'target' not in graph inputs"),
    (dict(), {"grid": [8, 9, 11]}, "spatial shape"),
    (dict(channel_axis="last"), {"output": {"name": "flow"}}, "channels"),
    (dict(), {"output": {"name": "warp"}}, "output 'warp' not in graph outputs"),
    (dict(batch=1), {"batch": "dynamic"}, "batch axis is fixed at 1"),
    (dict(layout="concat"), {"inputs": {"layout": "pair", "source": "pair", "target": "x"}},
     "not in graph inputs"),
])
def test_a_card_that_contradicts_its_graph_is_a_card_error(tmp_path, build, card, message):
    path = com_model(tmp_path / "m.onnx", GRID, card=card, **build)
    with pytest.raises(CardError) as info:
        model_loading.resolve(path)
    text = _one_line(info)
    assert "card contradicts the graph" in text and message in text, text


def test_an_explicit_card_replaces_the_stored_one_and_is_checked_too(tmp_path):
    path = com_model(tmp_path / "m.onnx", GRID)
    good = ModelCard.from_dict({**read_card(path).to_dict(), "description": "given"})
    assert model_loading.resolve(path, card=good).card.description == "given"
    wrong = ModelCard.from_dict({**read_card(path).to_dict(), "grid": [8, 9, 12]})
    with pytest.raises(CardError, match="spatial shape"):
        model_loading.resolve(path, card=wrong)


def _write(path, data: bytes):
    path.write_bytes(data)
    return path
