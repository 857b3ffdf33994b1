"""Choosing the online models' initialisation: the Goldilocks zone (Fort & Scherlis, AAAI 2019).

Fort & Scherlis report that initialisations whose loss Hessian H has a high Tr(H) / ||H|| (many directions of
positive curvature relative to the sharpest one) train faster. ``choose_init`` draws ``n`` initialisations of the
forward and inverse MLPs (seeds ``seed, seed + 7919, seed + 2 * 7919, ...``: candidate 0 is the default
initialisation, so ``n = 1`` changes nothing) and keeps the one with

- ``curvature``: the highest Tr(H) / ||H||, H the Hessian of the summed forward + inverse MSE on one batch with
  respect to all weights and biases of both models; Tr(H) by Hutchinson's estimator (``probes`` Rademacher
  vectors v, mean of v^T H v), ||H|| the largest |eigenvalue| by power iteration on Hessian-vector products
  (``power_iters`` steps), both with double back-propagation; or
- ``loss``: the lowest initial loss on that batch.

The batch is the first ``batch`` (motor, code) pairs the robot saw while building its goals (never the test set).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from robot.online import OnlineModels

__all__ = ["CANDIDATE_STRIDE", "candidate_seeds", "curvature_ratio", "initial_loss", "choose_init"]

CANDIDATE_STRIDE = 7919


def candidate_seeds(seed: int, n: int) -> list[int]:
    """The ``n`` initialisation seeds tried for run seed ``seed``; the first is ``seed`` itself."""
    return [seed + CANDIDATE_STRIDE * k for k in range(n)]


def _loss_fn(models: OnlineModels, motor: np.ndarray, code: np.ndarray):  # noqa: ANN202  (a closure)
    fwd, inv = models.to_modules()
    params = [p for m in (fwd, inv) for p in m.parameters()]
    for p in params:
        p.requires_grad_(True)
    m, c = torch.as_tensor(motor, dtype=torch.float32), torch.as_tensor(code, dtype=torch.float32)

    def loss() -> torch.Tensor:
        return ((fwd(m) - c) ** 2).mean() + ((inv(c) - m) ** 2).mean()

    return loss, params


def initial_loss(models: OnlineModels, motor: np.ndarray, code: np.ndarray) -> float:
    """Forward + inverse MSE of ``models`` on motor (N, D) / code (N, C) before any step."""
    loss, _ = _loss_fn(models, motor, code)
    with torch.no_grad():
        return float(loss())


def curvature_ratio(models: OnlineModels, motor: np.ndarray, code: np.ndarray, probes: int = 8,
                    power_iters: int = 12, seed: int = 0) -> tuple[float, float, float]:
    """(Tr(H) / ||H||, Tr(H), ||H||) of the loss on motor (N, D) / code (N, C); see the module doc."""
    loss, params = _loss_fn(models, motor, code)
    grads = torch.autograd.grad(loss(), params, create_graph=True)
    g = torch.Generator().manual_seed(seed)

    def hvp(vs: list[torch.Tensor]) -> list[torch.Tensor]:
        dot = sum((gr * v).sum() for gr, v in zip(grads, vs, strict=True))
        return list(torch.autograd.grad(dot, params, retain_graph=True))

    trace = 0.0
    for _ in range(probes):
        vs = [torch.randint(0, 2, p.shape, generator=g).float() * 2 - 1 for p in params]
        trace += float(sum((h * v).sum() for h, v in zip(hvp(vs), vs, strict=True))) / probes
    vs = [torch.randn(p.shape, generator=g) for p in params]
    norm = 0.0
    for _ in range(power_iters):
        n = float(torch.sqrt(sum((v * v).sum() for v in vs)))
        vs = [v / max(n, 1e-30) for v in vs]
        hv = hvp(vs)
        norm = abs(float(sum((h * v).sum() for h, v in zip(hv, vs, strict=True))))
        vs = [h.detach() for h in hv]
    return trace / max(norm, 1e-30), trace, norm


def choose_init(motor_dim: int, code_dim: int, hidden: tuple[int, ...], seed: int, n: int, motor: np.ndarray,
                code: np.ndarray, criterion: Literal["curvature", "loss"] = "curvature",
                ) -> tuple[int, list[dict[str, float]]]:
    """The initialisation seed to use and one record per candidate (seed, score, loss; trace and norm with
    ``curvature``). ``n = 1`` returns ``seed`` without computing anything."""
    seeds = candidate_seeds(seed, n)
    if n <= 1:
        return seed, []
    records = []
    for s in seeds:
        models = OnlineModels(motor_dim, code_dim, hidden, seed=s)
        rec: dict[str, float] = {"seed": s, "loss": initial_loss(models, motor, code)}
        if criterion == "curvature":
            rec["score"], rec["trace"], rec["norm"] = curvature_ratio(models, motor, code, seed=s)
        else:
            rec["score"] = -rec["loss"]
        records.append(rec)
    best = max(records, key=lambda r: r["score"])
    return int(best["seed"]), records
