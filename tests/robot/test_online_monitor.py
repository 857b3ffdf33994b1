"""VECA of the online models' hidden layers: the Gram shortcut equals the eigenvalue definition, on the right
activations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.veca import veca
from robot.online import OnlineModels
from robot.online_monitor import hidden_activations, online_veca, veca_columns, veca_gram


def test_gram_veca_equals_the_variance_of_the_covariance_eigenvalues() -> None:
    rng = np.random.default_rng(0)
    for s, h in ((16, 320), (50, 8), (3, 5)):
        x = rng.standard_normal((s, h)) * rng.uniform(0.1, 3.0, h)
        assert veca_gram(x) == pytest.approx(veca(x), rel=1e-9, abs=1e-12)
    assert np.isnan(veca_gram(np.ones((1, 4))))


def test_hidden_activations_are_the_mlps_tanh_layers() -> None:
    models = OnlineModels(2, 6, (10, 7), seed=3)
    rng = np.random.default_rng(1)
    motor, code = rng.random((5, 2)).astype(np.float32), rng.standard_normal((5, 6)).astype(np.float32)
    acts = hidden_activations(models, motor, code)
    fwd, inv = models.to_modules()
    with torch.no_grad():
        for name, mlp, x in (("fwd", fwd, motor), ("inv", inv, code)):
            h = torch.as_tensor(x)
            for i, layer in enumerate(mlp.layers[:-1]):
                h = torch.tanh(layer(h))
                assert torch.allclose(acts[f"{name}_h{i}"], h, atol=1e-6)
    assert list(online_veca(models, motor, code)) == list(veca_columns(2))


def _hidden(mlp: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    hs = []
    for layer in mlp.layers[:-1]:  # type: ignore[attr-defined]
        x = torch.tanh(layer(x))
        hs.append(x)
    return mlp.layers[-1](x), hs  # type: ignore[attr-defined]


def test_edm_step_equals_autograd_of_mse_plus_the_penalty() -> None:
    """One full-batch SGD step with --edm-weight w moves every weight by -lr * d(MSE + w * sum_l EDM(h_l))/dW."""
    from models.veca import edm_penalty

    w, lr = 0.5, 0.1
    models = OnlineModels(2, 6, (8, 12), lr=lr, momentum=0.0, seed=2, edm_weight=w, edm_groups=2)
    fwd, inv = models.to_modules()
    rng = np.random.default_rng(0)
    motor, code = rng.random((10, 2)).astype(np.float32), rng.standard_normal((10, 6)).astype(np.float32)
    mt, ct = torch.from_numpy(motor), torch.from_numpy(code)
    loss = torch.zeros(())
    for mlp, x, y in ((fwd, mt, ct), (inv, ct, mt)):
        out, hs = _hidden(mlp, x)
        loss = loss + torch.mean((out - y) ** 2) + w * sum(edm_penalty(h, 2) for h in hs)
    params = [*fwd.parameters(), *inv.parameters()]
    grads = torch.autograd.grad(loss, params)
    models.fit(motor, code, rng, epochs=1, batch_size=10)  # one step on the whole (permuted) batch
    f2, i2 = models.to_modules()
    for p, g, q in zip(params, grads, [*f2.parameters(), *i2.parameters()], strict=True):
        assert torch.allclose(q, p - lr * g, atol=1e-6)
    assert grads[0].abs().max() > 0


def test_edm_lowers_the_correlation_between_groups() -> None:
    """Trained alike, the models with EDM end with less correlated hidden groups than without (EDM measured after)."""
    from models.veca import edm_penalty

    rng = np.random.default_rng(0)
    motor = rng.random((64, 2)).astype(np.float32)
    code = np.concatenate([np.sin(3 * motor), np.cos(2 * motor), motor * motor[:, ::-1]], 1).astype(np.float32)
    pen = {}
    for weight in (0.0, 0.2):
        models = OnlineModels(2, 6, (16, 16), lr=0.05, seed=0, edm_weight=weight, edm_groups=4)
        fit_rng = np.random.default_rng(1)
        for _ in range(60):
            models.fit(motor, code, fit_rng)
        acts = hidden_activations(models, motor, code)
        pen[weight] = float(sum(edm_penalty(a, 4) for a in acts.values()))
    assert pen[0.2] < 0.7 * pen[0.0]


def test_edm_groups_must_divide_the_hidden_sizes() -> None:
    with pytest.raises(ValueError, match="divide"):
        OnlineModels(2, 6, (10, 8), edm_weight=0.1, edm_groups=4)
    OnlineModels(2, 6, (10, 8), edm_weight=0.0, edm_groups=4)  # off: groups unchecked


def test_closed_form_edm_gradient_equals_autograd() -> None:
    from models.veca import edm_penalty
    from robot.online_monitor import edm_hidden_grad

    h = torch.tanh(torch.randn(2, 16, 12, generator=torch.Generator().manual_seed(0)))
    h[1, :, 5] = 0.3  # a constant unit: finite gradient
    x = h.clone().requires_grad_(True)
    (auto,) = torch.autograd.grad(sum(edm_penalty(x[m], 3) for m in range(2)), x)
    assert torch.allclose(edm_hidden_grad(h, 3), auto, atol=1e-6)
    assert torch.isfinite(edm_hidden_grad(h[:, :1], 3)).all()  # one sample
