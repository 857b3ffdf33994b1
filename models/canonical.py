"""A canonical form of our MLPs: the weight-space symmetries that leave the function unchanged, removed
(Petzka, Trimmel & Sminchisescu 2020, "Notes on the symmetries of 2-layer ReLU-networks").

A layer is a pair ``(W (out, in), b (out,))`` in PyTorch's convention (``y = x @ W.T + b``); a network is a list of
layers, input to output, with one activation after every layer but the last (linear output). A 1x1 ``Conv2d`` is the
same thing over channels (``W (out, in, 1, 1)`` is read as ``(out, in)``). The symmetries removed, per hidden layer
(units = rows of ``W_i, b_i``; their outgoing weights = columns of ``W_{i+1}``):

- ``tanh`` (odd): sign flips (negate a unit's row and bias and its outgoing column) and permutations. Canonical:
  every bias >= 0 (a zero bias: the row's sum >= 0; both zero: left as is), then units sorted by (bias, row norm,
  row sum), ascending.
- ``relu`` (positively homogeneous): positive rescaling (row and bias times c > 0, outgoing column times 1/c) and
  permutations. Canonical: every unit's ``[row, bias]`` scaled to unit L2 norm (the outgoing column times the norm;
  an all-zero unit left as is), then units sorted by (bias, row sum), ascending.

Hidden layers are processed from input to output, so each layer's key is read after the previous layer's order and
signs/scales are fixed: equivalent networks get the same canonical weights (up to float rounding), the canonical
network computes the same function, and canonicalising twice changes nothing beyond rounding. Units whose keys tie
exactly (e.g. duplicated units) keep their relative order, so such networks may not map to one canonical form.

Covered: pure chains Linear/1x1-Conv -> (tanh | ReLU) -> ... -> Linear/1x1-Conv: ``models.mlp.MLP`` (tanh; the
online forward/inverse models) and ``nn.Sequential`` of ``nn.Linear``/1x1 ``nn.Conv2d`` (stride 1, no padding,
groups 1) alternating with one kind of ``nn.Tanh``/``nn.ReLU``. In ``models.guided_net.GuidedNet``
(``canonical_guided_net``): the hidden ReLU units of each ``_Fuse`` 1x1 conv (their outgoing weights are that level's
slice of ``head[0]``'s input channels; the bilinear upsampling and concatenation in between are per-channel linear
and positively homogeneous, so the symmetry survives them) and the hidden units of ``head`` (1x1 conv -> ReLU -> 1x1
conv). Not covered: anything with BatchNorm, pooling, residual sums or other nonlinearities between the two layers
(the encoder/backbones), which break or change these symmetries.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

__all__ = ["Layer", "Activation", "as_layers", "canonical_units", "random_units", "canonicalize", "random_symmetry",
           "mlp_apply", "flatten", "weight_distance", "module_linears", "module_layers", "load_layers",
           "canonical_module", "canonical_explore", "guided_layers", "canonical_guided_net", "random_guided_symmetry"]

Layer = tuple[np.ndarray, np.ndarray]
Activation = Literal["tanh", "relu"]


def _np(a: Any) -> np.ndarray:
    """A numpy or torch array -> float64 numpy (a copy)."""
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.array(a, dtype=np.float64)


def as_layers(layers: Sequence[tuple[Any, Any]], chain: bool = True) -> list[Layer]:
    """(W (out, in) or (out, in, 1, 1), b (out,)) pairs, numpy or torch -> float64 numpy pairs with W (out, in).

    Raises ``ValueError`` if a pair is not of those shapes, or (``chain``) if the layers do not chain (``W_{i+1}``
    has ``in == out`` of ``W_i``)."""
    out: list[Layer] = []
    for i, (w, b) in enumerate(layers):
        w, b = _np(w), _np(b)
        if w.ndim == 4 and w.shape[2:] == (1, 1):
            w = w[:, :, 0, 0]
        if w.ndim != 2 or b.shape != (w.shape[0],):
            raise ValueError(f"layer {i}: weight {w.shape} / bias {b.shape} is not (out, in) / (out,)")
        if chain and out and out[-1][0].shape[0] != w.shape[1]:
            raise ValueError(f"layer {i} takes {w.shape[1]} inputs but layer {i - 1} gives {out[-1][0].shape[0]}")
        out.append((w, b))
    return out


def canonical_units(w_in: np.ndarray, b_in: np.ndarray, w_out: np.ndarray,
                    activation: Activation) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One hidden layer of H units: incoming W (H, in), b (H,), outgoing W (out, H) -> the same in canonical form."""
    w_in, b_in, w_out = np.array(w_in, np.float64), np.array(b_in, np.float64), np.array(w_out, np.float64)
    rowsum = w_in.sum(1)
    if activation == "tanh":
        s = np.sign(b_in)
        s = np.where(s == 0, np.sign(rowsum), s)
        s = np.where(s == 0, 1.0, s)
        w_in, b_in, w_out, rowsum = w_in * s[:, None], b_in * s, w_out * s[None, :], rowsum * s
        order = np.lexsort((rowsum, np.linalg.norm(w_in, axis=1), b_in))
    elif activation == "relu":
        n = np.sqrt((w_in ** 2).sum(1) + b_in ** 2)
        n = np.where(n > 0, n, 1.0)
        w_in, b_in, w_out = w_in / n[:, None], b_in / n, w_out * n[None, :]
        order = np.lexsort((w_in.sum(1), b_in))
    else:
        raise ValueError(f"activation must be 'tanh' or 'relu', got {activation!r}")
    return w_in[order], b_in[order], w_out[:, order]


def random_units(w_in: np.ndarray, b_in: np.ndarray, w_out: np.ndarray, activation: Activation,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One hidden layer (shapes as ``canonical_units``) randomly permuted and sign-flipped (tanh) or rescaled by
    log-uniform factors in [0.1, 10] (relu): an equivalent layer."""
    h = len(b_in)
    c = rng.choice([-1.0, 1.0], h) if activation == "tanh" else np.exp(rng.uniform(np.log(0.1), np.log(10.0), h))
    p = rng.permutation(h)
    inv = 1.0 / c if activation == "relu" else c
    return (np.asarray(w_in) * c[:, None])[p], (np.asarray(b_in) * c)[p], (np.asarray(w_out) * inv[None, :])[:, p]


def _walk(layers: Sequence[tuple[Any, Any]], units: Any) -> list[Layer]:
    """``units(w_in, b_in, w_out)`` applied to every hidden layer, input to output."""
    ls = as_layers(layers)
    for i in range(len(ls) - 1):
        (w, b), (w2, b2) = ls[i], ls[i + 1]
        w, b, w2 = units(w, b, w2)
        ls[i], ls[i + 1] = (w, b), (w2, b2)
    return ls


def canonicalize(layers: Sequence[tuple[Any, Any]], activation: Activation) -> list[Layer]:
    """The canonical form (module docstring) of a network: float64 (W (out, in), b (out,)) pairs, same shapes."""
    return _walk(layers, lambda w, b, w2: canonical_units(w, b, w2, activation))


def random_symmetry(layers: Sequence[tuple[Any, Any]], activation: Activation,
                    rng: np.random.Generator) -> list[Layer]:
    """An equivalent network (``random_units`` on every hidden layer): same function, shapes as ``as_layers``."""
    return _walk(layers, lambda w, b, w2: random_units(w, b, w2, activation, rng))


def mlp_apply(layers: Sequence[tuple[Any, Any]], x: np.ndarray, activation: Activation) -> np.ndarray:
    """The network on inputs x (N, in) -> (N, out), float64."""
    act = np.tanh if activation == "tanh" else (lambda z: np.maximum(z, 0.0))
    ls = as_layers(layers)
    y = np.asarray(x, np.float64)
    for i, (w, b) in enumerate(ls):
        y = y @ w.T + b
        if i < len(ls) - 1:
            y = act(y)
    return y


def flatten(layers: Sequence[tuple[Any, Any]]) -> np.ndarray:
    """All weights and biases, layer by layer, as one float64 vector (P,)."""
    return np.concatenate([a.ravel() for pair in as_layers(layers, chain=False) for a in pair])


def weight_distance(a: Sequence[tuple[Any, Any]], b: Sequence[tuple[Any, Any]]) -> float:
    """Relative L2 distance of two networks' parameters: ||a - b|| / mean(||a||, ||b||), 0 (same) to 2.

    Raises ``ValueError`` if the shapes differ. Apply it to ``canonicalize``d networks to compare functions' weights
    without the symmetries."""
    fa, fb = flatten(a), flatten(b)
    shapes = [[p.shape for pair in as_layers(n, chain=False) for p in pair] for n in (a, b)]
    if shapes[0] != shapes[1]:
        raise ValueError("the two networks have different shapes")
    scale = 0.5 * (np.linalg.norm(fa) + np.linalg.norm(fb))
    return float(np.linalg.norm(fa - fb) / scale) if scale > 0 else 0.0


# -- nn.Module helpers (torch imported by the caller's modules only) --------------------------------------------------
def module_linears(module: Any) -> tuple[list[Any], Activation]:
    """The Linear/1x1-Conv layers of an ``MLP`` (tanh) or of an ``nn.Sequential`` chain, and its activation.

    Raises ``ValueError`` for anything else (module docstring: what is covered)."""
    from torch import nn

    from models.mlp import MLP

    if isinstance(module, MLP):
        return list(module.layers), "tanh"
    if not isinstance(module, nn.Sequential):
        raise ValueError(f"{type(module).__name__} is neither an MLP nor an nn.Sequential chain")
    mods, acts = list(module), set()
    for i, m in enumerate(mods):
        if i % 2:
            if not isinstance(m, nn.Tanh | nn.ReLU):
                raise ValueError(f"item {i} ({type(m).__name__}) is not nn.Tanh/nn.ReLU: the symmetry does not hold")
            acts.add("tanh" if isinstance(m, nn.Tanh) else "relu")
        elif not (isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and
                  m.stride == (1, 1) and m.padding in ((0, 0), "valid") and m.groups == 1 and m.bias is not None)):
            raise ValueError(f"item {i} ({type(m).__name__}) is not an nn.Linear or a 1x1 nn.Conv2d with bias")
    if len(mods) % 2 == 0 or len(acts) > 1:
        raise ValueError("need Linear (act Linear)... ending with a Linear, one kind of activation")
    return mods[::2], acts.pop() if acts else "tanh"


def module_layers(module: Any) -> tuple[list[Layer], Activation]:
    """(W, b) pairs (float64, W (out, in)) and activation of ``module`` (``module_linears``)."""
    lins, act = module_linears(module)
    return as_layers([(m.weight, m.bias) for m in lins]), act


def load_layers(linears: Sequence[Any], layers: Sequence[Layer]) -> None:
    """Copy (W (out, in), b (out,)) pairs into Linear/1x1-Conv modules, in place (their dtype and shape)."""
    import torch

    with torch.no_grad():
        for m, (w, b) in zip(linears, layers, strict=True):
            m.weight.copy_(torch.as_tensor(w).reshape(m.weight.shape).to(m.weight.dtype))
            m.bias.copy_(torch.as_tensor(b).to(m.bias.dtype))


def canonical_module(module: Any) -> Any:
    """A deep copy of an ``MLP`` / ``nn.Sequential`` chain with canonical weights (same function)."""
    out = copy.deepcopy(module)
    lins, act = module_linears(out)
    load_layers(lins, canonicalize([(m.weight, m.bias) for m in lins], act))
    return out


def canonical_explore(explore: dict[str, Any]) -> dict[str, Any]:
    """``models.export_sources.load_explore_run``'s dict with its forward/inverse MLPs in canonical form."""
    return {**explore, "forward": canonical_module(explore["forward"]), "inverse": canonical_module(explore["inverse"])}


def _guided_convs(net: Any) -> tuple[list[Any], Any, Any]:
    fuses = [net.fuse_mid, net.fuse_high] + ([net.fuse_low] if hasattr(net, "fuse_low") else [])
    return [f.conv[0] for f in fuses], net.head[0], net.head[2]


def guided_layers(net: Any) -> list[Layer]:
    """The covered 1x1 convs of a ``GuidedNet`` as (W, b) pairs: each fuse conv, then ``head[0]``, ``head[2]``
    (for ``weight_distance``; not one chain)."""
    fuse, h0, h2 = _guided_convs(net)
    return [as_layers([(m.weight, m.bias)])[0] for m in (*fuse, h0, h2)]


def _guided_walk(net: Any, units: Any) -> Any:
    """A deep copy of a ``GuidedNet`` with ``units(w_in, b_in, w_out)`` applied to each fuse's ReLU units (their
    outgoing weights: their slice of ``head[0]``'s input channels), then to the head's hidden units."""
    out = copy.deepcopy(net)
    fuse, h0, h2 = _guided_convs(out)
    (w0, b0), (w2, b2) = as_layers([(h0.weight, h0.bias), (h2.weight, h2.bias)])
    start = 0
    for conv in fuse:  # fuse k feeds head[0]'s input channels start .. start + H_k (the concatenation order)
        ((w, b),) = as_layers([(conv.weight, conv.bias)])
        sl = slice(start, start + len(b))
        w, b, w0[:, sl] = units(w, b, w0[:, sl])
        load_layers([conv], [(w, b)])
        start += len(b)
    load_layers([h0, h2], _walk([(w0, b0), (w2, b2)], units))
    return out


def canonical_guided_net(net: Any) -> Any:
    """A deep copy of a ``GuidedNet`` whose fuse and head ReLU units are in canonical form (same function)."""
    return _guided_walk(net, lambda w, b, w2: canonical_units(w, b, w2, "relu"))


def random_guided_symmetry(net: Any, rng: np.random.Generator) -> Any:
    """A deep copy of a ``GuidedNet`` with its fuse and head ReLU units randomly permuted and rescaled (same
    function)."""
    return _guided_walk(net, lambda w, b, w2: random_units(w, b, w2, "relu", rng))
