"""The whole pipeline against the plain PyTorch way, on a real exported convolutional network.

A small random 3-D CNN is exported from torch to ONNX with a card; regrisk's map (ONNX Runtime,
native kernels, Welford) must equal the map computed directly in torch: grid_sample warps,
the torch network, grid_sample composition, torch.var over the stacked samples.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from regrisk import Estimator, perturbations  # noqa: E402
from regrisk.card import ModelCard, write_card  # noqa: E402
from regrisk.reference import bspline_basis  # noqa: E402

N = 16


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = torch.nn.Conv3d(2, 6, 3, padding=1)
        self.b = torch.nn.Conv3d(6, 3, 3, padding=1)

    def forward(self, source, target):
        x = torch.cat([source, target], 1)
        return self.b(torch.tanh(self.a(x))) * 2.0


def _torch_sigma(net, S, T, draws, spacing):
    F = torch.nn.functional
    n = torch.tensor(S.shape, dtype=torch.float64)
    ident = torch.stack(torch.meshgrid(*[torch.arange(k, dtype=torch.float64) for k in S.shape],
                                       indexing="ij"))

    def grid(pos):
        return (2 * pos / (n - 1)[:, None, None, None] - 1).flip(0).permute(1, 2, 3, 0)[None].float()

    s, t = torch.from_numpy(S)[None, None], torch.from_numpy(T)[None, None]
    out = []
    with torch.no_grad():
        for k in range(len(draws)):
            A = torch.from_numpy(draws.affine[k].astype(np.float64))
            if draws.control[k] is not None:
                c = draws.control[k].astype(np.float64)
                Bs = [torch.from_numpy(bspline_basis(m, cc)) for m, cc in zip(S.shape, c.shape[1:])]
                d = torch.einsum("cijk,ai,bj,dk->cabd", torch.from_numpy(c), *Bs)
                pos = ident + d
            else:
                d = None
                pos = torch.einsum("ij,jabc->iabc", A[:, :3], ident) + A[:, 3, None, None, None]
            sk = F.grid_sample(s, grid(pos), mode="bilinear", padding_mode="zeros", align_corners=True)
            u = net(sk, t)[0].double()
            if d is not None:
                g = u + F.grid_sample(d[None].float(), grid(ident + u), mode="bilinear",
                                      padding_mode="border", align_corners=True)[0].double()
            else:
                g = torch.einsum("ij,jabc->iabc", A[:, :3], ident + u) + A[:, 3, None, None, None] - ident
            out.append(g)
    var = torch.var(torch.stack(out), dim=0)
    return torch.sqrt((var * torch.from_numpy(spacing ** 2)[:, None, None, None]).sum(0)).numpy()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_engine_equals_plain_torch_on_exported_cnn(tmp_path):
    net = Net().eval()
    path = tmp_path / "cnn.onnx"
    x = torch.zeros(1, 1, N, N, N)
    torch.onnx.export(net, (x, x), str(path), input_names=["source", "target"],
                      output_names=["flow"], opset_version=17, dynamo=False,
                      dynamic_axes={"source": {0: "B"}, "target": {0: "B"}, "flow": {0: "B"}})
    card = ModelCard(name="cnn", grid=(N, N, N))
    card.output.name = "flow"
    card.preprocess.method = "none"
    write_card(path, card)

    rng = np.random.default_rng(0)
    from scipy.ndimage import gaussian_filter

    S = gaussian_filter(rng.random((N, N, N)), 2).astype(np.float32)
    T = gaussian_filter(rng.random((N, N, N)), 2).astype(np.float32)
    spacing = np.array([1.0, 1.3, 0.8])
    aff = np.diag([*spacing, 1.0])
    K, seed = 12, 4
    res = Estimator(str(path), batch=3).estimate((S, aff), (T, aff), samples=K,
                                                 perturbation="paper", seed=seed,
                                                 variance_reduction="none")
    draws = perturbations.parse("paper").draw(K, (N, N, N), np.diag(spacing),
                                             np.random.default_rng(seed)).sample_order()
    expected = _torch_sigma(net, S, T, draws, spacing)
    assert expected.mean() > 0.05
    np.testing.assert_allclose(res.uncertainty, expected, atol=2e-3 * expected.max())
