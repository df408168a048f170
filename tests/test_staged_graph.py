"""The staged graph's own bookkeeping, with plain NumPy parts: what depends on one feed only
runs once while that feed keeps its value; nodes that no output needs are not in a stage."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from regrisk.backends.staged import Native, StagedGraph, single_feed_parts, split


def _counting(fn, calls: list[str], name: str):
    def run(inputs, threads=None):
        calls.append(name)
        return [fn(*inputs)]
    return run


def _graph(calls: list[str]) -> StagedGraph:
    parts = [Native(("target",), ("t2",), _counting(lambda t: t * 2.0, calls, "target")),
             Native(("source", "t2"), ("d",), _counting(lambda s, t: s - t, calls, "pair")),
             Native(("d",), ("out",), _counting(lambda d: d + 1.0, calls, "after"))]
    return StagedGraph(parts, compile_stage=None)


def test_single_feed_parts_follow_what_each_tensor_derives_from() -> None:
    assert single_feed_parts(_graph([]).parts) == {0: "target"}


def test_target_only_parts_run_once_while_the_target_keeps_its_value(rng) -> None:
    calls: list[str] = []
    graph = _graph(calls)
    target = rng.random((1, 1, 4, 5, 6), dtype=np.float32)
    for k in range(3):
        source = rng.random((1, 1, 4, 5, 6), dtype=np.float32)
        got = graph.run({"source": source, "target": target.copy()}, ["out"])["out"]
        np.testing.assert_array_equal(got, source - 2.0 * target + 1.0)
    assert calls.count("target") == 1 and calls.count("pair") == 3
    # the caller changes its array in place, then one value: both are new targets
    fed = target.copy()
    graph.run({"source": source, "target": fed}, ["out"])
    fed[0, 0, 3, 4, 5] += 1.0
    got = graph.run({"source": source, "target": fed}, ["out"])["out"]
    np.testing.assert_array_equal(got, source - 2.0 * fed + 1.0)
    assert calls.count("target") == 2


def test_a_stage_keeps_only_the_nodes_its_outputs_need() -> None:
    nodes = [helper.make_node("Relu", ["a"], ["dead"]), helper.make_node("Neg", ["b"], ["y"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in "ab"],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    (stage,) = split(helper.make_model(graph), [])
    assert stage.inputs == ("b",) and stage.outputs == ("y",)
    assert [n.op_type for n in stage.graph.graph.node] == ["Neg"]


def test_a_piece_whose_values_nothing_reads_makes_no_stage() -> None:
    """A GridSample cut after a node only a removed node would read: no empty stage before it."""
    nodes = [helper.make_node("Relu", ["a"], ["unread"]), helper.make_node("Neg", ["b"], ["y"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in "ab"],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    natives = {"Neg": lambda inputs, threads=None: [-inputs[0]]}
    parts = split(helper.make_model(graph), [1], natives)
    assert len(parts) == 1 and isinstance(parts[0], Native) and parts[0].op == "Neg"
