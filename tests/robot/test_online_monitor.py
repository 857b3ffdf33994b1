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
