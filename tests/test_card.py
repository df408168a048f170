"""`regrisk card`: write, edit, show and validate cards of existing ONNX files."""

from __future__ import annotations

import json


from regrisk.card import read_card, sidecar_path
from regrisk.cli import main
from builders import com_model

GRID = (8, 9, 10)


def test_card_from_graph_then_edit(tmp_path, capsys):
    path = com_model(tmp_path / "m.onnx", GRID, card=False, kind="map", units="unit",
                     names={"source": "moving_image", "target": "fixed_image", "output": "warp"})
    assert main(["card", str(path), "--kind", "map", "--units", "unit", "--preprocess", "percentile",
                 "--low", "1", "--high", "99", "--description", "test net"]) == 0
    card = read_card(path)
    assert card.grid == GRID and card.inputs.source == "moving_image"
    assert card.inputs.target == "fixed_image" and card.output.name == "warp"
    assert card.output.kind == "map" and card.output.units == "unit"
    assert card.preprocess.method == "percentile" and card.preprocess.high == 99
    assert card.batch == "dynamic"
    # edit one field, keep the rest
    assert main(["card", str(path), "--stochastic", "true", "--align-corners", "false",
                 "--provenance", "source=unit test", "--provenance", "licence=MIT"]) == 0
    card = read_card(path)
    assert card.stochastic and not card.output.align_corners and card.description == "test net"
    assert card.provenance == {"source": "unit test", "licence": "MIT"}
    assert main(["card", str(path), "--provenance", "licence="]) == 0
    assert read_card(path).provenance == {"source": "unit test"}
    capsys.readouterr()
    assert main(["card", str(path), "--show", "--name", "renamed"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["name"] == "renamed" and read_card(path).name == "m"  # --show writes nothing


def test_sidecar_and_reslice(tmp_path):
    path = com_model(tmp_path / "m.onnx", GRID, card=False)
    assert main(["card", str(path), "--sidecar", "--resample", "reslice", "--spacing", "1", "1.5", "2"]) == 0
    side = sidecar_path(path)
    assert side.is_file()
    card = read_card(path)
    assert card.resample.method == "reslice" and card.resample.spacing == (1.0, 1.5, 2.0)


def test_card_that_contradicts_the_graph_is_refused(tmp_path, capsys):
    path = com_model(tmp_path / "m.onnx", GRID, card=False)
    before = path.read_bytes()
    for argv, match in [
        (["--source-input", "nope"], "'nope' not in graph inputs"),
        (["--grid", "8", "9", "11"], "spatial shape"),
        (["--channel-axis", "last"], "channels"),
        (["--output", "missing"], "not in graph outputs"),
        (["--layout", "concat", "--concat-input", "source"], "not declared by the card"),
        (["--resample", "reslice"], "resample.spacing"),
        (["--units", "inches"], None),
    ]:
        code = None
        try:
            code = main(["card", str(path), *argv])
        except SystemExit as exc:  # argparse rejects bad choices with status 2
            code = exc.code
        assert code == 2
        err = capsys.readouterr().err
        if match:
            assert match in err and len(err.strip().splitlines()) == 1, err
    assert path.read_bytes() == before  # nothing was written


def test_fixed_batch_graph_is_detected(tmp_path):
    path = com_model(tmp_path / "f.onnx", GRID, batch=2, card=False)
    assert main(["card", str(path)]) == 0
    card = read_card(path)
    assert card.batch == "fixed" and card.batch_size == 2


def test_not_onnx(tmp_path, capsys):
    p = tmp_path / "x.onnx"
    p.write_bytes(b"\x08\x07garbage" * 30)
    assert main(["card", str(p), "--grid", "8", "9", "10"]) == 2
    assert "not an ONNX model" in capsys.readouterr().err


def test_input_names_and_channels_of_each_layout():
    from regrisk.card import Inputs

    pair = Inputs(layout="pair", source="moving", target="fixed", concat="unused")
    assert pair.names() == ("moving", "fixed") and pair.channels == 1
    concat = Inputs(layout="concat", source="unused", target="unused", concat="both")
    assert concat.names() == ("both",) and concat.channels == 2


def test_embed_card_replaces_the_card_and_keeps_other_metadata(tmp_path):
    import onnx

    from regrisk.card import METADATA_KEY, ModelCard, embed_card

    path = com_model(tmp_path / "m.onnx", GRID)
    model = onnx.load(str(path))
    other = model.metadata_props.add()
    other.key, other.value = "author", "someone"
    card = read_card(path)
    card.description = "replaced"
    embed_card(model, card)
    props = [(p.key, p.value) for p in model.metadata_props]
    assert [k for k, _ in props].count(METADATA_KEY) == 1 and ("author", "someone") in props
    stored = ModelCard.from_json(dict(props)[METADATA_KEY])
    assert stored.description == "replaced" and stored.grid == GRID


def test_a_starting_card_that_is_not_an_object_is_one_line(tmp_path, capsys):
    path = com_model(tmp_path / "m.onnx", GRID, card=False)
    for text in ("[1, 2]", '{"name": "m", "inputs": "pair"}'):
        (tmp_path / "c.json").write_text(text)
        assert main(["card", str(path), "--from-json", str(tmp_path / "c.json"),
                     "--layout", "pair"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "model card:" in err, err
