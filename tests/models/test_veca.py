"""``models.veca``: VECA of activations with a known covariance spectrum, conv maps read as samples, the EDM penalty
(0 for decorrelated groups, > 0 for correlated ones, lowered by its own gradient), and the layer taps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.veca import LayerTaps, as_samples, edm_penalty, veca


def _with_spectrum(eigenvalues: np.ndarray, samples: int = 500, seed: int = 0) -> np.ndarray:
    """[samples, C] activations whose sample covariance (ddof 1) has exactly these eigenvalues."""
    rng = np.random.default_rng(seed)
    c = len(eigenvalues)
    z = rng.normal(size=(samples, c))
    z -= z.mean(0)
    u, _, _ = np.linalg.svd(z, full_matrices=False)  # orthonormal, zero-mean columns
    white = u * np.sqrt(samples - 1)  # sample covariance = I
    q, _ = np.linalg.qr(rng.normal(size=(c, c)))  # a random rotation
    return (white * np.sqrt(eigenvalues)) @ q.T + 3.0  # an offset, which the covariance ignores


def test_veca_of_a_known_spectrum():
    lam = np.array([4.0, 2.0, 1.0, 1.0, 0.5, 0.0])
    x = _with_spectrum(lam)
    assert veca(x) == pytest.approx(float(np.var(lam)), rel=1e-9)
    assert veca(x, normalise=True) == pytest.approx(float(np.var(lam / lam.mean())), rel=1e-9)
    assert veca(_with_spectrum(np.full(5, 2.0))) == pytest.approx(0.0, abs=1e-9)  # isotropic: no variance
    assert veca(x * 2) == pytest.approx(16 * veca(x), rel=1e-9)  # raw VECA: 4th power of the scale
    assert veca(x * 2, normalise=True) == pytest.approx(veca(x, normalise=True), rel=1e-9)
    assert veca(torch.from_numpy(x).float()) == pytest.approx(veca(x), rel=1e-4)  # a torch tensor works too
    assert veca(np.zeros((10, 4)), normalise=True) == 0.0


def test_conv_maps_are_read_as_positions_times_images():
    rng = np.random.default_rng(1)
    maps = rng.normal(size=(3, 5, 4, 6))  # [N,C,H,W]
    flat = np.stack([maps[n, :, i, j] for n in range(3) for i in range(4) for j in range(6)])
    np.testing.assert_array_equal(as_samples(maps), flat)
    np.testing.assert_allclose(as_samples(torch.from_numpy(maps)).numpy(), flat)
    assert veca(maps) == pytest.approx(veca(flat), rel=1e-12)
    with pytest.raises(ValueError, match=r"\[S,C\] or \[N,C,H,W\]"):
        veca(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="2 samples"):
        veca(np.zeros((1, 3)))


def test_edm_penalty_is_zero_for_decorrelated_groups_and_positive_for_correlated_ones():
    white = torch.from_numpy(_with_spectrum(np.ones(8), samples=256, seed=2) * 5.0)  # uncorrelated units
    assert float(edm_penalty(white, 4)) == pytest.approx(0.0, abs=1e-6)
    dup = white.clone()
    dup[:, 4:] = white[:, :4] * 0.3 + 1.0  # groups 3-4 copy groups 1-2 (any scale): perfectly correlated
    pen = float(edm_penalty(dup, 4))  # 4 of the 24 cross-group unit pairs have correlation 1, the others 0:
    assert pen == pytest.approx(8 / 48, rel=1e-3)  # 8 of the 48 off-block entries of the [C,C] matrix
    within = white.clone()
    within[:, 1] = within[:, 0]  # correlated inside one group: not penalised
    assert float(edm_penalty(within, 4)) == pytest.approx(0.0, abs=1e-6)
    assert float(edm_penalty(dup.reshape(16, 16, 8).permute(0, 2, 1)[..., None], 4)) == pytest.approx(pen, rel=1e-5)
    with pytest.raises(ValueError, match="divide the 8 channels"):
        edm_penalty(white, 3)
    with pytest.raises(ValueError, match=">= 2"):
        edm_penalty(white, 1)


def test_the_gradient_of_the_edm_penalty_reduces_it():
    torch.manual_seed(0)
    x = torch.randn(256, 6)
    layer = torch.nn.Linear(6, 8)
    with torch.no_grad():  # start correlated: the second half of the units repeats the first
        layer.weight[4:] = layer.weight[:4] + 0.05 * torch.randn(4, 6)
    opt = torch.optim.SGD(layer.parameters(), lr=0.5)
    first = float(edm_penalty(torch.relu(layer(x)), 2))
    for _ in range(50):
        opt.zero_grad()
        edm_penalty(torch.relu(layer(x)), 2).backward()
        opt.step()
    last = float(edm_penalty(torch.relu(layer(x)), 2))
    assert first > 0.1 and last < 0.5 * first, (first, last)


def test_layer_taps_keep_tuple_elements_and_go_away():
    class Two(torch.nn.Module):
        def forward(self, x):
            return x + 1, x * 2

    two = Two()
    with LayerTaps({"a": (two, 0), "b": (two, 1)}) as taps:
        two(torch.ones(2, 3))
        assert float(taps.outputs["a"].sum()) == 12 and float(taps.outputs["b"].sum()) == 12
        assert not taps.outputs["a"].requires_grad
    assert not two._forward_hooks
