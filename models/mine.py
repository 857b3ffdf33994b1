"""MINE: Mutual Information Neural Estimation (Belghazi et al., ICML 2018), and a fixed reduction of big tensors.

``mine_estimate(a, b)`` estimates I(A;B) in nats from N paired samples with the Donsker-Varadhan (DV) bound

    I(A;B) >= sup_T  E_joint[T(a, b)] - log E_marginal[exp T(a, b')],

where the marginal pairs (a, b') pair each a with a b drawn from another sample (b shuffled against a) and T is a
small MLP (the statistics network) on ``concat([a, b])``. The gradient of the log term is bias-corrected with the
paper's exponential moving average of E_marginal[exp T] in the denominator (MINE, section 3.2).

``flatten_reduce(x, dims, seed)`` turns an image or a convolutional feature map into a short vector before MINE:
MINE then estimates the MI of the reduced variables. The reduction is a fixed (seeded) deterministic function, so
by the data-processing inequality I(r(A); s(B)) <= I(A;B): the MI of the reduced variables, which MINE estimates,
is a lower bound of the MI of the originals. (For a deterministic network on continuous inputs the MI of the
originals is infinite or ill-defined; the numbers say how much dependence a small critic finds in a few hundred
samples, see docs/science.md section 6.)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["flatten_reduce", "mine_estimate", "gaussian_mi"]

_PROJECTIONS: dict[tuple[int, int, int], np.ndarray] = {}


def gaussian_mi(rho: float, d: int = 1) -> float:
    """Analytic I(A;B) in nats of d independent pairs of unit Gaussians with correlation ``rho``: -d/2 log(1-rho^2)."""
    return -0.5 * d * math.log(1.0 - rho * rho)


def _projection(d_in: int, dims: int, seed: int) -> np.ndarray:
    key = (d_in, dims, seed)
    if key not in _PROJECTIONS:
        rng = np.random.default_rng([seed, d_in, dims])
        _PROJECTIONS[key] = (rng.standard_normal((d_in, dims)) / math.sqrt(dims)).astype(np.float32)
    return _PROJECTIONS[key]


def flatten_reduce(x: Any, dims: int = 64, seed: int = 0, side: int = 8) -> np.ndarray:
    """A fixed reduction of a batch to at most ``dims`` numbers per sample.

    x: (N, C, H, W) (an image batch or a conv layer's map) or (N, D) or (N, ...), float, numpy or torch.
    1. (N, C, H, W) with H or W > ``side``: average-pool each channel to (min(H, side), min(W, side)) cells
       (``torch.nn.functional.adaptive_avg_pool2d``); a 64x64 gray image becomes 8x8 = 64 numbers;
    2. flatten to (N, D);
    3. D > ``dims``: multiply by a fixed Gaussian random projection (D, dims), entries N(0, 1/dims), drawn from
       ``numpy.random.default_rng([seed, D, dims])`` (the same matrix for every call with these three numbers).
    Returns float32 (N, min(D, dims)). Deterministic; MINE on the result estimates a lower bound of the MI of ``x``.
    """
    import torch

    t = torch.as_tensor(x).detach().float()
    if t.ndim == 4 and (t.shape[2] > side or t.shape[3] > side):
        t = torch.nn.functional.adaptive_avg_pool2d(t, (min(t.shape[2], side), min(t.shape[3], side)))
    flat = t.reshape(len(t), -1).cpu().numpy().astype(np.float32, copy=False)
    if flat.shape[1] > dims:
        flat = flat @ _projection(flat.shape[1], dims, seed)
    return np.ascontiguousarray(flat, dtype=np.float32)


def _standardise(v: np.ndarray) -> np.ndarray:
    # per-column z-score: MI is invariant to invertible per-coordinate affine maps, and the critic trains better
    return (v - v.mean(0)) / np.maximum(v.std(0), 1e-6)


def mine_estimate(a: Any, b: Any, steps: int = 300, lr: float = 1e-3, hidden: int = 64, seed: int = 0,
                  batch: int = 256, ema_rate: float = 0.01, n_evals: int = 50, window: int = 5,
                  n_marginal: int = 16) -> float:
    """Estimate I(A;B) in nats with MINE (DV bound, moving-average bias-corrected gradient), on held-out pairs.

    a: (N, da), b: (N, db) float32 (numpy or torch), row i of ``a`` paired with row i of ``b``; N >= 8. Columns are
    standardised first (MI is invariant to that). The N rows are split at random (``seed``) into two halves. The
    statistics network T = Linear(da+db, hidden)-ELU-Linear(hidden, hidden)-ELU-Linear(hidden, 1) is trained with
    Adam (``lr``) for ``steps`` minibatches on the first half: ``batch`` joint rows (a_i, b_i), and as many marginal
    rows (a_i, b_k) with k drawn at random (b shuffled against a). The gradient of log E_marginal[exp T] uses an
    exponential moving average (rate ``ema_rate``) of E_marginal[exp T] as its denominator (MINE's bias correction).

    Reported value: the DV bound evaluated on the **held-out** second half (joint: its rows; marginal: its ``a``
    against up to ``n_marginal`` fixed cyclic shifts of its ``b``, so no row meets its own b), at ``n_evals`` points
    spread over training, averaged over a sliding window of ``window`` evaluations, and the largest of these
    window averages (early stopping on held-out data). Why held out and why early stopping: with a few hundred
    samples of tens of dimensions the critic memorises its training pairs; the bound on the training pairs then grows
    without limit even for independent variables, while on unseen pairs it first rises and then falls (below 0 for
    independent variables) as the critic overfits. The held-out bound of any fixed critic is (up to the small
    finite-sample bias of the log term) a lower bound of the MI, so the best one is the estimate; the window
    average keeps the choice of the best from picking evaluation noise. Where the critic does not overfit (many
    samples, few dimensions) this is the average over the window at the end of training.

    Deterministic for a given ``seed`` and torch thread count; the global torch and numpy random states are left
    untouched. Returns a float in nats (>= about 0 for independent variables: the untrained critic scores ~0).
    """
    import torch
    from torch import nn

    av, bv = (np.asarray(torch.as_tensor(v).detach().float().cpu().numpy(), np.float32) for v in (a, b))
    if av.ndim != 2 or bv.ndim != 2 or len(av) != len(bv) or len(av) < 8:
        raise ValueError(f"expected paired 2-D samples with N >= 8, got {av.shape} and {bv.shape}")
    if min(steps, batch, n_evals, window, n_marginal) < 1:
        raise ValueError("steps, batch, n_evals, window and n_marginal must be >= 1")
    av, bv = _standardise(av.astype(np.float64)), _standardise(bv.astype(np.float64))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(av))
    n_tr = len(av) // 2
    tr, ev = order[:n_tr], order[n_tr:]
    at, bt = torch.from_numpy(av[tr].astype(np.float32)), torch.from_numpy(bv[tr].astype(np.float32))
    ae, be = torch.from_numpy(av[ev].astype(np.float32)), torch.from_numpy(bv[ev].astype(np.float32))
    n_ev = len(ev)
    n_shift = max(1, min(n_marginal, 4096 // n_ev, n_ev - 1))  # at most ~4096 marginal rows per evaluation
    shifts = 1 + rng.choice(n_ev - 1, size=n_shift, replace=False)
    idx = torch.arange(n_ev)
    a_m = ae.repeat(len(shifts), 1)
    b_m = torch.cat([be[(idx + int(s)) % n_ev] for s in shifts])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Linear(at.shape[1] + bt.shape[1], hidden), nn.ELU(), nn.Linear(hidden, hidden),
                            nn.ELU(), nn.Linear(hidden, 1))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    m = min(batch, n_tr)
    log_ema: torch.Tensor | None = None
    every = max(1, steps // n_evals)
    vals: list[float] = []
    for step in range(steps):
        j = torch.from_numpy(rng.choice(n_tr, size=m, replace=False))
        k = torch.from_numpy(rng.integers(0, n_tr, size=m))
        t_joint = net(torch.cat([at[j], bt[j]], 1)).squeeze(1)
        t_marg = net(torch.cat([at[j], bt[k]], 1)).squeeze(1)
        lme = torch.logsumexp(t_marg, 0) - math.log(m)  # log of the minibatch mean of exp T on marginal pairs
        cur = lme.detach()
        log_ema = cur if log_ema is None else torch.logaddexp(log_ema + math.log1p(-ema_rate),
                                                              cur + math.log(ema_rate))
        # grad of exp(lme - log_ema) = sum(e^T grad T) / (m * EMA): the bias-corrected gradient of log E[e^T]
        loss = -(t_joint.mean() - torch.exp(lme - log_ema))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % every == 0 or step == steps - 1:
            with torch.no_grad():
                tj = net(torch.cat([ae, be], 1)).squeeze(1)
                tm = net(torch.cat([a_m, b_m], 1)).squeeze(1)
                vals.append(float(tj.mean() - (torch.logsumexp(tm, 0) - math.log(len(tm)))))
    w = min(window, len(vals))
    out = float(np.max(np.convolve(vals, np.ones(w) / w, mode="valid")))
    if not math.isfinite(out):
        raise FloatingPointError(f"MINE estimate is not finite ({out}); lower lr")
    return out
