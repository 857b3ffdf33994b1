"""VECA of the online models' hidden layers: a generalisation monitor that needs no held-out set (issue 19.1).

VECA (Ge et al., AAAI 2020; ``models.veca``) of a layer is the variance of the eigenvalues of the covariance of its
activations over samples. The exploring robot has no validation set, so ``online_veca`` computes it on the samples
it is learning from now (the last ``recent`` samples of the loop) for each hidden layer of the forward model
(input: motor) and the inverse model (input: code): columns ``veca_fwd_h0``, ``veca_fwd_h1``, ``veca_inv_h0``, ...
of ``metrics.csv``.

With S samples and H units the covariance has rank < S, and the eigenvalue variance is computed without an
eigendecomposition: mean(l) = tr(K) / ((S - 1) H) and mean(l^2) = ||K||_F^2 / ((S - 1)^2 H) for the centred Gram
matrix K = X X^T (S x S), so each layer costs O(S^2 H) (equal to ``models.veca.veca`` to float precision; tested).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["veca_gram", "hidden_activations", "online_veca", "veca_columns"]


def veca_gram(acts: np.ndarray | torch.Tensor) -> float:
    """VECA of activations (S, H): the variance (ddof 0) of the H eigenvalues of their covariance (ddof 1)."""
    x = torch.as_tensor(acts, dtype=torch.float64)
    s, h = x.shape
    if s < 2:
        return float("nan")
    x = x - x.mean(0, keepdim=True)
    k = x @ x.T
    mean = float(torch.trace(k)) / ((s - 1) * h)
    mean_sq = float(k.square().sum()) / ((s - 1) ** 2 * h)
    return max(mean_sq - mean * mean, 0.0)


def hidden_activations(models: Any, motor: np.ndarray, code: np.ndarray) -> dict[str, torch.Tensor]:
    """Hidden-layer outputs (after tanh) of ``robot.online.OnlineModels``: ``fwd_h<i>`` on motor (S, D) and
    ``inv_h<i>`` on code (S, C), each (S, hidden_i) float32."""
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for k, (name, inp, dim) in enumerate((("fwd", motor, models.D), ("inv", code, models.C))):
            x = torch.zeros(len(inp), models.P)
            x[:, :dim] = torch.as_tensor(np.asarray(inp, np.float32))
            for i, (w, b) in enumerate(zip(models.weights[:-1], models.biases[:-1], strict=True)):
                x = torch.tanh(x @ w[k] + b[k])
                out[f"{name}_h{i}"] = x
    return out


def veca_columns(n_hidden: int) -> tuple[str, ...]:
    """The metrics columns of ``online_veca`` for MLPs with ``n_hidden`` hidden layers."""
    return tuple(f"veca_{m}_h{i}" for m in ("fwd", "inv") for i in range(n_hidden))


def online_veca(models: Any, motor: np.ndarray, code: np.ndarray) -> dict[str, float]:
    """``veca_<model>_h<i>`` of each hidden layer on the samples motor (S, D) / code (S, C); NaN if S < 2."""
    return {f"veca_{k}": veca_gram(a) for k, a in hidden_activations(models, motor, code).items()}
