"""Shared builders for the tests: real ONNX graphs (onnx.helper) with their cards, NIfTI
files and test volumes. A helpers module, not a test file: pytest collects nothing here.

The centre-of-mass model predicts u = com(S) - com(T), a constant field. It is exactly
equivariant to translations (trilinear interpolation preserves mass and shifts the first moment
exactly for an image with compact support), and under an isotropic scale tau(y) = s (y - c) + c
the composed sample is u_g(x) = (s - 1)(x - com(T)) + const, so
sigma(x) = std(s) * |M (x - com(T))| analytically.

The graph can emit the field in any card convention: the conversion from canonical form is
written here from the definitions in DESIGN.md (independently of regrisk.conventions).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def coords(shape: tuple[int, int, int]) -> np.ndarray:
    return np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"))


def com(volume: np.ndarray) -> np.ndarray:
    """Intensity-weighted centre of mass (3,) in voxels, float64."""
    v = volume.astype(np.float64)
    g = coords(volume.shape).astype(np.float64)
    return (g * v).reshape(3, -1).sum(1) / v.sum()


def blob(shape: tuple[int, int, int], centre, width: float = 2.0) -> np.ndarray:
    """A Gaussian blob, effectively zero at the borders (compact support for the tests)."""
    g = coords(shape)
    c = np.asarray(centre, dtype=np.float32)[:, None, None, None]
    r2 = ((g - c) ** 2).sum(0)
    v = np.exp(-r2 / (2 * width ** 2))
    v[v < 1e-3] = 0
    return v.astype(np.float32)


def convention_scale_offset(units: str, align_corners: bool, shape) -> tuple[np.ndarray, np.ndarray]:
    """v = scale * p + offset for a position p in voxels (DESIGN.md / card docs)."""
    n = np.asarray(shape, dtype=np.float64)
    if units == "voxel":
        return np.ones(3), np.zeros(3)
    if units == "unit":
        return (1 / (n - 1), np.zeros(3)) if align_corners else (1 / n, 0.5 / n)
    if align_corners:
        return 2 / (n - 1), -np.ones(3)
    return 2 / n, 1 / n - 1


def canonical_to_convention(u: np.ndarray, kind: str, units: str, align_corners: bool,
                            order: str, axis: str) -> np.ndarray:
    """(B,3,D,H,W) canonical -> the card's convention, in plain NumPy."""
    shape = u.shape[2:]
    scale, offset = convention_scale_offset(units, align_corners, shape)
    a = u.astype(np.float64)
    if kind == "map":
        a = a + coords(shape)[None]
        a = a * scale[None, :, None, None, None] + offset[None, :, None, None, None]
    else:
        a = a * scale[None, :, None, None, None]
    if order == "xyz":
        a = a[:, ::-1]
    if axis == "last":
        a = np.moveaxis(a, 1, -1)
    return np.ascontiguousarray(a, dtype=np.float32)


def com_model(path: Path, grid: tuple[int, int, int], *, batch: int | str = "B",
              layout: str = "pair", order: tuple[str, str] = ("source", "target"),
              kind: str = "displacement", units: str = "voxel", align_corners: bool = True,
              channel_order: str = "ijk", channel_axis: str = "first",
              names: dict[str, str] | None = None, card: dict | None | bool = True,
              noise: float = 0.0) -> Path:
    """Write the centre-of-mass registration model as ONNX, with its card unless card=False.

    ``noise`` > 0 adds a RandomNormal constant per sample (a stochastic graph: one draw per
    pass, the same vector over the whole grid).
    """
    names = {"source": "source", "target": "target", "concat": "pair", "output": "flow", **(names or {})}
    D, H, W = grid
    g = coords(grid)
    inits = [
        numpy_helper.from_array(g[None], "grid"),
        numpy_helper.from_array(np.zeros((1, 3, D, H, W), np.float32), "zeros"),
        numpy_helper.from_array(np.array([1, 2, 3, 4], np.int64), "ax_all"),
        numpy_helper.from_array(np.array([2, 3, 4], np.int64), "ax_sp"),
    ]
    inputs, nodes, (s_name, t_name) = _input_nodes(layout, order, names, batch, grid, inits)
    nodes += _com_nodes(s_name, t_name, noise)
    cur = _convention_nodes("u", kind, units, align_corners, channel_order, channel_axis, grid,
                            nodes, inits)
    nodes.append(helper.make_node("Identity", [cur], [names["output"]]))
    out_shape = [batch, 3, D, H, W] if channel_axis == "first" else [batch, D, H, W, 3]
    graph = helper.make_graph(nodes, "com_registration", inputs,
                              [helper.make_tensor_value_info(names["output"], TensorProto.FLOAT, out_shape)],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    if card is not False:
        card_dict = {
            "name": "com", "grid": list(grid),
            "inputs": {"layout": layout, "source": names["source"], "target": names["target"],
                       "concat": names["concat"], "order": list(order)},
            "output": {"name": names["output"], "kind": kind, "units": units,
                       "align_corners": align_corners, "channel_order": channel_order,
                       "channel_axis": channel_axis},
            "batch": "fixed" if isinstance(batch, int) else "dynamic",
            "batch_size": batch if isinstance(batch, int) else 1,
            "preprocess": {"method": "none"},
            "stochastic": noise > 0,
        }
        if isinstance(card, dict):
            card_dict.update(card)
        attach_card_json(model, card_dict)
    onnx.save(model, str(path))
    return path


def _input_nodes(layout: str, order: tuple[str, str], names: dict[str, str], batch: int | str,
                 grid: tuple[int, int, int], inits: list) -> tuple[list, list, tuple[str, str]]:
    """(graph inputs, nodes that split a concatenated input, (source, target) tensor names)."""
    D, H, W = grid
    if layout == "pair":
        s_name, t_name = names["source"], names["target"]
        inputs = [helper.make_tensor_value_info(s_name, TensorProto.FLOAT, [batch, 1, D, H, W]),
                  helper.make_tensor_value_info(t_name, TensorProto.FLOAT, [batch, 1, D, H, W])]
        return inputs, [], (s_name, t_name)
    inputs = [helper.make_tensor_value_info(names["concat"], TensorProto.FLOAT, [batch, 2, D, H, W])]
    first, second = ("S", "T") if order == ("source", "target") else ("T", "S")
    inits.append(numpy_helper.from_array(np.array([1, 1], np.int64), "split"))
    nodes = [helper.make_node("Split", [names["concat"], "split"], [first, second], axis=1)]
    return inputs, nodes, ("S", "T")


def _com_nodes(s_name: str, t_name: str, noise: float) -> list:
    """u = com(S) - com(T) broadcast over the grid (plus one noise draw per pass), as "u"."""
    nodes = []
    for tag, x in (("s", s_name), ("t", t_name)):
        nodes += [
            helper.make_node("ReduceSum", [x, "ax_all"], [f"mass_{tag}"], keepdims=1),
            helper.make_node("Mul", [x, "grid"], [f"wx_{tag}"]),
            helper.make_node("ReduceSum", [f"wx_{tag}", "ax_sp"], [f"mom_{tag}"], keepdims=1),
            helper.make_node("Div", [f"mom_{tag}", f"mass_{tag}"], [f"com_{tag}"]),
        ]
    nodes.append(helper.make_node("Sub", ["com_s", "com_t"], ["u_small"]))
    cur = "u_small"
    if noise > 0:
        nodes += [
            helper.make_node("RandomNormalLike", ["u_small"], ["eps"], scale=float(noise)),
            helper.make_node("Add", ["u_small", "eps"], ["u_noisy"]),
        ]
        cur = "u_noisy"
    nodes.append(helper.make_node("Add", [cur, "zeros"], ["u"]))
    return nodes


def _convention_nodes(cur: str, kind: str, units: str, align_corners: bool, channel_order: str,
                      channel_axis: str, grid: tuple[int, int, int], nodes: list,
                      inits: list) -> str:
    """Append the canonical -> declared-convention nodes after ``cur``; the last tensor name."""
    scale, offset = convention_scale_offset(units, align_corners, grid)
    if kind == "map":
        nodes.append(helper.make_node("Add", [cur, "grid"], ["phi"]))
        cur = "phi"
    if units != "voxel":
        inits.append(numpy_helper.from_array(scale.astype(np.float32).reshape(1, 3, 1, 1, 1), "scale"))
        nodes.append(helper.make_node("Mul", [cur, "scale"], ["scaled"]))
        cur = "scaled"
        if kind == "map":
            inits.append(numpy_helper.from_array(offset.astype(np.float32).reshape(1, 3, 1, 1, 1), "offset"))
            nodes.append(helper.make_node("Add", [cur, "offset"], ["shifted"]))
            cur = "shifted"
    if channel_order == "xyz":
        inits.append(numpy_helper.from_array(np.array([2, 1, 0], np.int64), "rev"))
        nodes.append(helper.make_node("Gather", [cur, "rev"], ["reordered"], axis=1))
        cur = "reordered"
    if channel_axis == "last":
        nodes.append(helper.make_node("Transpose", [cur], ["lastaxis"], perm=[0, 2, 3, 4, 1]))
        cur = "lastaxis"
    return cur


def attach_card_json(model: onnx.ModelProto, card: dict) -> None:
    """Store a card dict as the model's ``regrisk.card`` metadata, exactly as given (tests
    write contradictory or partial cards on purpose, so no validation here)."""
    import json

    from regrisk.card import METADATA_KEY

    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(card)


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.asarray(data), affine), str(path))
    return path


def oblique_affine(spacing=(1.5, 1.0, 2.0), angle_deg: float = 20.0, origin=(-10.0, 5.0, 3.0)) -> np.ndarray:
    """A non-identity NIfTI affine: rotation about z, anisotropic voxels, an offset."""
    a = np.deg2rad(angle_deg)
    R = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    A = np.eye(4)
    A[:3, :3] = R @ np.diag(spacing)
    A[:3, 3] = origin
    return A


# -- oblique pairs for the interoperability tests (ANTs, SimpleITK) ----------------------------

def centred_affine(shape, spacing, euler_deg, flip=(1, 1, 1)) -> np.ndarray:
    """A NIfTI affine with rotation ``euler_deg`` (xyz, degrees), anisotropic ``spacing``, axes
    optionally flipped (a left-handed grid), whose central voxel sits at world (0, 0, 0)."""
    from scipy.spatial.transform import Rotation

    A = np.eye(4)
    A[:3, :3] = Rotation.from_euler("xyz", euler_deg, degrees=True).as_matrix() @ np.diag(
        np.asarray(spacing, dtype=np.float64) * np.asarray(flip))
    A[:3, 3] = -A[:3, :3] @ ((np.asarray(shape) - 1) / 2)
    return A


def world_points(shape, affine) -> np.ndarray:
    """(3, *shape) world (RAS mm) position of every voxel."""
    ijk = np.indices(shape, dtype=np.float64).reshape(3, -1)
    return (affine[:3, :3] @ ijk + affine[:3, 3:]).reshape((3, *shape))


def phantom(shape, affine) -> np.ndarray:
    """A smooth head-like phantom defined in world mm (so every grid shows the same object): an
    ellipsoid of radii (10, 9, 10) mm with blobs inside and zero background."""
    x = world_points(shape, affine)
    r = np.sqrt((x[0] / 10) ** 2 + (x[1] / 9) ** 2 + (x[2] / 10) ** 2)
    body = 1 / (1 + np.exp((r - 1) * 12))
    blobs = sum(w * np.exp(-((x - np.reshape(c, (3, 1, 1, 1))) ** 2).sum(0) / 8)
                for w, c in ((60, (3, 2, -2)), (-40, (-4, -1, 3)), (30, (1, -4, 4))))
    v = body * (100 + blobs)
    v[r > 1.3] = 0
    return v.astype(np.float32)


# Label values chosen to be awkward: far apart, one above 2^10, in a 16-bit type.
PHANTOM_LABELS = (3, 17, 250, 1000, 2047)


def phantom_labels(shape, affine) -> np.ndarray:
    """int16 label map of the phantom: a core and four sectors of the ellipsoid, 0 outside."""
    x = world_points(shape, affine)
    r = np.sqrt((x[0] / 10) ** 2 + (x[1] / 9) ** 2 + (x[2] / 10) ** 2)
    sector = (x[0] > 0).astype(int) + 2 * (x[2] > 0)
    out = np.asarray(PHANTOM_LABELS[1:], dtype=np.int16)[sector]
    out[r < 0.45] = PHANTOM_LABELS[0]
    out[r >= 1] = 0
    return out


def smooth_field_model(amplitude: float = 1.5, periods: float = 1.0):
    """A callable registration model: a fixed smooth nonlinear field (voxels of its grid)."""
    def model(source: np.ndarray, target: np.ndarray) -> np.ndarray:
        b, _, *grid = source.shape
        g = np.stack(np.meshgrid(*[np.linspace(0, periods * np.pi, n) for n in grid],
                                 indexing="ij"))
        u = amplitude * np.stack([np.sin(g[1]) * np.cos(g[2]), np.sin(g[0] + g[2]) - 0.5,
                                  0.6 + 0.4 * np.sin(g[0])])
        return np.ascontiguousarray(np.broadcast_to(u[None], (b, 3, *grid)), dtype=np.float32)
    return model


TARGET_SHAPE, SOURCE_SHAPE = (32, 28, 24), (26, 30, 20)
TARGET_AFFINE = centred_affine(TARGET_SHAPE, (1.5, 1.0, 2.0), (10, -15, 25))


def oblique_estimate(folder: Path, flip, model) -> dict[str, Path]:
    """Phantom target and source on oblique anisotropic grids of other shapes, spacings and
    rotations (``flip`` (1, -1, 1) makes the source grid left-handed), registered by ``model``
    and saved: {"target", "source", "result"} paths."""
    from regrisk import Estimator

    source_affine = centred_affine(SOURCE_SHAPE, (1.2, 1.4, 1.8), (-20, 5, -30), flip)
    files = {"target": write_nifti(folder / "target.nii.gz",
                                   phantom(TARGET_SHAPE, TARGET_AFFINE), TARGET_AFFINE),
             "source": write_nifti(folder / "source.nii.gz",
                                   phantom(SOURCE_SHAPE, source_affine), source_affine),
             "result": folder / "result"}
    with Estimator(model, threads=1) as est:
        res = est.estimate(str(files["source"]), str(files["target"]), samples=3,
                           perturbation="translation", seed=0)
    res.save(files["result"])
    return files


def warp_model(path: Path, grid: tuple[int, int, int], *, padding: str = "border",
               align_corners: bool = True, mode: str = "linear", seed: int = 0) -> Path:
    """A small registration graph that warps inside (5-D GridSample, as uniGradICON's cascade
    and the default model's demons do): u = 2 tanh(conv(S, T)) voxels; the output is the
    composition u + u(x + u) plus conv(S(x + u)), so one GridSample samples a 3-channel field
    and one a 1-channel image, with convolutions between. Dynamic batch, canonical output."""
    rng = np.random.default_rng(seed)
    n = np.asarray(grid, np.float32).reshape(1, 3, 1, 1, 1)
    # voxel position p -> normalised coordinate, per the ONNX GridSample definition
    scale = 2.0 / (n - 1.0) if align_corners else 2.0 / n
    offset = -np.ones_like(n) if align_corners else 1.0 / n - 1.0
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.3, (3, 2, 3, 3, 3)).astype(np.float32), "w_flow"),
        numpy_helper.from_array(rng.normal(0, 0.3, (3, 1, 3, 3, 3)).astype(np.float32), "w_img"),
        numpy_helper.from_array(np.float32(2.0), "amp"),
        numpy_helper.from_array(coords(grid)[None], "grid"),
        numpy_helper.from_array(scale.astype(np.float32), "scale"),
        numpy_helper.from_array(offset.astype(np.float32), "offset"),
        numpy_helper.from_array(np.array([2, 1, 0], np.int64), "rev"),
    ]
    sample = {"mode": mode, "padding_mode": padding, "align_corners": int(align_corners)}
    nodes = [
        helper.make_node("Concat", ["source", "target"], ["pair"], axis=1),
        helper.make_node("Conv", ["pair", "w_flow"], ["conv"], pads=[1] * 6),
        helper.make_node("Tanh", ["conv"], ["th"]),
        helper.make_node("Mul", ["th", "amp"], ["u"]),
        helper.make_node("Add", ["u", "grid"], ["pos"]),
        helper.make_node("Mul", ["pos", "scale"], ["pos_s"]),
        helper.make_node("Add", ["pos_s", "offset"], ["norm_ijk"]),
        helper.make_node("Gather", ["norm_ijk", "rev"], ["norm_xyz"], axis=1),
        helper.make_node("Transpose", ["norm_xyz"], ["g"], perm=[0, 2, 3, 4, 1]),
        helper.make_node("GridSample", ["u", "g"], ["u_at"], **sample),
        helper.make_node("GridSample", ["source", "g"], ["warped"], **sample),
        helper.make_node("Conv", ["warped", "w_img"], ["img_term"], pads=[1] * 6),
        helper.make_node("Add", ["u", "u_at"], ["composed"]),
        helper.make_node("Add", ["composed", "img_term"], ["flow"]),
    ]
    D, H, W = grid
    graph = helper.make_graph(
        nodes, "warp_registration",
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, ["B", 1, D, H, W])
         for k in ("source", "target")],
        [helper.make_tensor_value_info("flow", TensorProto.FLOAT, ["B", 3, D, H, W])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    attach_card_json(model, {
        "name": "warp", "grid": list(grid),
        "inputs": {"layout": "pair", "source": "source", "target": "target"},
        "output": {"name": "flow", "kind": "displacement", "units": "voxel",
                   "align_corners": True, "channel_order": "ijk", "channel_axis": "first"},
        "batch": "dynamic", "batch_size": 1, "preprocess": {"method": "none"}})
    onnx.save(model, str(path))
    return path


def smooth_pair(shape: tuple[int, int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two smooth random volumes (0..8): a pair whose difference varies in space."""
    from scipy.ndimage import gaussian_filter

    g = np.random.default_rng(seed)
    S = gaussian_filter(g.random(shape), 2).astype(np.float32) * 8
    T = gaussian_filter(g.random(shape), 2).astype(np.float32) * 8
    return S, T


def difference_model(s, t):
    """A model whose spread under B-spline perturbations varies in space: u = (S - T)."""
    d = (s - t)[:, 0]
    return np.ascontiguousarray(np.stack([d, 0.5 * d, -d], axis=1), dtype=np.float32)


def reliability(samples: int, variance_reduction: str, perturbation: str,
                seeds: int = 4) -> tuple[float, float]:
    """(split-half reliability the runs estimated, Spearman agreement measured between their
    maps), averaged over ``seeds`` runs (all pairs of maps) of the difference model on
    smooth_pair((24, 24, 24), 0)."""
    from scipy.stats import spearmanr

    from regrisk import Estimator

    S, T = smooth_pair((24, 24, 24), 0)
    est = Estimator(difference_model)
    maps, rel = [], []
    for seed in range(seeds):
        res = est.estimate((S, np.eye(4)), (T, np.eye(4)), samples=samples, seed=seed,
                           variance_reduction=variance_reduction, perturbation=perturbation)
        maps.append(res.grid_uncertainty.ravel())
        rel.append(res.summary["sampling"]["precision"]["reliability"])
    measured = [spearmanr(a, b).statistic for i, a in enumerate(maps) for b in maps[i + 1:]]
    return round(float(np.mean(rel)), 3), round(float(np.mean(measured)), 3)
