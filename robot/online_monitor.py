"""VECA of the online models' hidden layers (a generalisation monitor that needs no held-out set, issue 19.1), and
the gradient of their EDM penalty (a decorrelation regulariser, issue 19.2).

VECA (Ge et al., AAAI 2020; ``models.veca``) of a layer is the variance of the eigenvalues of the covariance of its
activations over samples. The exploring robot has no validation set, so ``online_veca`` computes it on the samples
it is learning from now (its training set: the episodic memory plus the last ``recent`` samples) for each hidden
layer of the forward model (input: motor) and the inverse model (input: code): columns ``veca_fwd_h0``,
``veca_fwd_h1``, ``veca_inv_h0``, ... of ``metrics.csv``, every ``--veca-every`` iterations (NaN between).

With S samples and H units the covariance has rank < S, and the eigenvalue variance is computed without an
eigendecomposition: mean(l) = tr(K) / ((S - 1) H) and mean(l^2) = ||K||_F^2 / ((S - 1)^2 H) for the centred Gram
matrix K = X X^T (S x S), so each layer costs O(S^2 H) (equal to ``models.veca.veca`` to float precision; tested).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["veca_gram", "model_hidden", "hidden_activations", "model_veca", "online_veca", "veca_columns",
           "edm_hidden_grad"]


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


def model_hidden(models: Any, k: int, inp: np.ndarray | torch.Tensor) -> dict[str, torch.Tensor]:
    """Hidden-layer outputs (after tanh) of model k (0 forward: inp = motor (S, D); 1 inverse: inp = code (S, C)) of
    ``robot.online.OnlineModels``: ``fwd_h<i>`` or ``inv_h<i>``, each (S, hidden_i) float32. Reads only model k's
    weights, so it may run while the other model is fitted elsewhere."""
    name, dim = ("fwd", models.D) if k == 0 else ("inv", models.C)
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        x = torch.zeros(len(inp), models.P)
        x[:, :dim] = torch.as_tensor(np.asarray(inp, np.float32))
        for i, (w, b) in enumerate(zip(models.weights[:-1], models.biases[:-1], strict=True)):
            x = torch.tanh(x @ w[k] + b[k])
            out[f"{name}_h{i}"] = x
    return out


def hidden_activations(models: Any, motor: np.ndarray, code: np.ndarray) -> dict[str, torch.Tensor]:
    """Hidden-layer outputs (after tanh) of ``robot.online.OnlineModels``: ``fwd_h<i>`` on motor (S, D) and
    ``inv_h<i>`` on code (S, C), each (S, hidden_i) float32."""
    return {**model_hidden(models, 0, motor), **model_hidden(models, 1, code)}


def veca_columns(n_hidden: int) -> tuple[str, ...]:
    """The metrics columns of ``online_veca`` for MLPs with ``n_hidden`` hidden layers."""
    return tuple(f"veca_{m}_h{i}" for m in ("fwd", "inv") for i in range(n_hidden))


def model_veca(models: Any, k: int, inp: np.ndarray | torch.Tensor) -> dict[str, float]:
    """``veca_<fwd|inv>_h<i>`` of model k's hidden layers on its inputs inp (S, D or C) (``model_hidden``)."""
    return {f"veca_{n}": veca_gram(a) for n, a in model_hidden(models, k, inp).items()}


def online_veca(models: Any, motor: np.ndarray, code: np.ndarray) -> dict[str, float]:
    """``veca_<model>_h<i>`` of each hidden layer on the samples motor (S, D) / code (S, C); NaN if S < 2."""
    return {**model_veca(models, 0, motor), **model_veca(models, 1, code)}


_MASKS: dict[tuple[int, int], torch.Tensor] = {}


def _off_block_mask(h: int, groups: int) -> torch.Tensor:
    """(h, h) float32: 1 between units of different groups (contiguous groups of h / groups), 0 within."""
    key = (h, groups)
    if key not in _MASKS:
        g = torch.arange(h) // (h // groups)
        _MASKS[key] = (g[:, None] != g[None, :]).float()
    return _MASKS[key]


def edm_hidden_grad(h: torch.Tensor, groups: int, eps: float = 1e-5) -> torch.Tensor:
    """d EDM(h[m]) / d h[m] for each model m of hidden outputs h (M, B, H) float32 (B samples of an H-unit layer;
    EDM as ``models.veca.edm_penalty`` with ``groups`` groups); returns (M, B, H), in closed form (no autograd):

    z = c / s with c = h - mean_B(h), s = sqrt(mean_B(c^2) + eps^2); R = z^T z / B; P = sum(O * R^2) / sum(O) with O
    the off-group mask; dP/dz = 4 z (O * R) / (B sum(O)); dP/dc = dP/dz / s - c mean_B(dP/dz * c) / s^3; dP/dh =
    dP/dc - mean_B(dP/dc). Equal to autograd of ``edm_penalty`` (tests/robot/test_online_monitor.py)."""
    b, width = h.shape[1], h.shape[2]
    off = _off_block_mask(width, groups)
    c = h - h.mean(1, keepdim=True)
    s = (c.square().mean(1, keepdim=True) + eps * eps).sqrt()
    z = c / s
    r = torch.bmm(z.transpose(1, 2), z).div_(b).mul_(off)
    dz = torch.bmm(z, r).mul_(4.0 / (b * float(off.sum())))
    dc = dz / s - c * ((dz * c).mean(1, keepdim=True) / s.pow(3))
    return dc - dc.mean(1, keepdim=True)
