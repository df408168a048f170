"""Graph surgery for the parts of a staged graph that regrisk runs natively.

A region of a torch-exported graph (its nodes named by module path, e.g. ``/refine/``) is
replaced by one node of regrisk's own domain; the staged graph (``backends.staged``) then cuts
there and calls the matching native function instead of ~100 small backend nodes. The modules
that recognise regions (``native_demons``, ``native_normalize``) check each region's shape and
parameters first; the replacement itself is checked here: every remaining node must still read
only what is made before it, else the graph is left as it was.
"""

from __future__ import annotations

from typing import Any

import numpy as np

DOMAIN = "ai.regrisk"


class Constants:
    """Initializers and Constant-node outputs of a graph by name, converted to arrays on first
    use (an index built once: a scan of 15,000 nodes per lookup cost most of the start-up)."""

    def __init__(self, model: Any) -> None:
        self.protos = {t.name: t for t in model.graph.initializer}
        self.protos.update({n.output[0]: n.attribute[0].t for n in model.graph.node
                            if n.op_type == "Constant" and n.attribute and n.attribute[0].HasField("t")})
        self.cache: dict[str, np.ndarray] = {}

    def get(self, name: str) -> np.ndarray | None:
        from onnx import numpy_helper

        if name not in self.cache and name in self.protos:
            self.cache[name] = numpy_helper.to_array(self.protos[name])
        return self.cache.get(name)


def attributes(node: Any) -> dict[str, Any]:
    """A node's attributes by name, byte strings decoded."""
    from onnx import helper

    values = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in values.items()}


def plain_conv3x3x3(node: Any) -> bool:
    """A Conv with a 3x3x3 kernel, stride 1, explicit padding 1, no dilation and one group."""
    a = attributes(node)
    return (node.op_type == "Conv" and list(a.get("kernel_shape", [])) == [3, 3, 3]
            and list(a.get("pads", [])) == [1] * 6 and a.get("auto_pad", "NOTSET") == "NOTSET"
            and list(a.get("strides", [1] * 3)) == [1] * 3
            and list(a.get("dilations", [1] * 3)) == [1] * 3 and a.get("group", 1) == 1)


def replace(model: Any, removed: list[Any], inputs: list[str], op: str, name: str) -> Any | None:
    """A copy of ``model`` with the nodes ``removed`` replaced by one ``op`` node (regrisk's
    domain) reading ``inputs`` and making the one tensor of theirs that the rest of the graph
    reads; None if they make more than one such tensor or the result would not be closed."""
    from onnx import ModelProto, helper

    nodes = list(model.graph.node)
    gone = {id(n) for n in removed}
    made = {o for n in removed for o in n.output}
    read = {i for n in nodes if id(n) not in gone for i in n.input}
    read |= {o.name for o in model.graph.output}
    out = [o for o in made if o in read]
    if len(out) != 1:
        return None
    fused = helper.make_node(op, inputs, out, name=name, domain=DOMAIN)
    first = next(i for i, n in enumerate(nodes) if id(n) in gone)
    rebuilt = nodes[:first] + [fused] + [n for n in nodes[first:] if id(n) not in gone]
    if not _closed(model, rebuilt):
        return None
    copy = ModelProto()
    copy.CopyFrom(model)
    del copy.graph.node[:]
    copy.graph.node.extend(rebuilt)
    if all(o.domain != DOMAIN for o in copy.opset_import):
        copy.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    return copy


def _closed(model: Any, nodes: list[Any]) -> bool:
    """Every node reads only graph inputs, initializers or earlier nodes' outputs."""
    known = {i.name for i in model.graph.input} | {t.name for t in model.graph.initializer} | {""}
    for n in nodes:
        if any(i not in known for i in n.input):
            return False
        known.update(n.output)
    return all(o.name in known for o in model.graph.output)
