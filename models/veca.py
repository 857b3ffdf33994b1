"""Activation statistics of a network's layers: VECA (a generalisation monitor) and the EDM penalty (a regulariser).

- **VECA** (Ge, Hou, Jiang, Yao & Yang, AAAI 2020 student abstract, "VECA: a method for detecting overfitting in
  neural networks"): the Variance of the Eigenvalues of the Covariance matrix of a layer's Activation matrix. The
  paper builds the empirical covariance of the last hidden layer's activations over samples and reports that its
  eigenvalues' variance tracks the test loss during training, without a validation set. ``veca(acts)``: acts
  ``[S,C]`` (S samples of a C-unit layer) or a conv map ``[N,C,H,W]``, read as ``S = N*H*W`` samples of a C-vector
  (every spatial position of every image is one sample: a 1x1 conv is a per-pixel fully connected layer). The paper
  states no normalisation; ``normalise=True`` divides the eigenvalues by their mean first (a scale-free variant, the
  squared coefficient of variation of the spectrum), since the raw value grows with the 4th power of the
  activations' scale.
- **EDM** (Gu, Hou, Zhang & Zhang, IJCAI 2018, "Regularizing deep neural networks with an ensemble-based
  decorrelation method"): a hidden layer's units are split into G non-overlapping groups ("base learners") and the
  covariance between the groups is penalised. Our reading (the paper's exact formula was not at hand):
  ``edm_penalty(acts, G)`` = the mean squared cross-correlation between units of different groups, each unit
  standardised over the batch (zero mean, unit variance: the batch-normalised activations, so that the penalty
  cannot be lowered by shrinking the activations). 0 when the groups are uncorrelated, at most 1.
- ``LayerTaps``: forward hooks that keep named layers' outputs (a tuple output, e.g. a backbone's levels, by index);
  ``guided_net_layers(model)``: the guided net's taps (encoder levels ``mid``, ``high`` (``low``), and ``head``, the
  head's hidden layer, the network's last hidden layer).

numpy only at import; ``edm_penalty`` and the hooks use torch (imported where they run).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["as_samples", "veca", "edm_penalty", "LayerTaps", "guided_net_layers", "layer_channels"]


def as_samples(acts: Any) -> Any:
    """acts ``[S,C]`` or ``[N,C,H,W]`` (numpy or torch) -> ``[S,C]`` (a conv map: ``S = N*H*W``; same library)."""
    if acts.ndim == 2:
        return acts
    if acts.ndim != 4:
        raise ValueError(f"activations must be [S,C] or [N,C,H,W], got shape {tuple(acts.shape)}")
    n, c = acts.shape[:2]
    if isinstance(acts, np.ndarray):
        return np.moveaxis(acts, 1, -1).reshape(-1, c)
    return acts.movedim(1, -1).reshape(-1, c)


def _numpy(x: Any) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    return x.detach().to("cpu").double().numpy()  # a torch tensor


def veca(activations: Any, normalise: bool = False) -> float:
    """VECA of a layer: ``var(eig(cov(X)))``. activations ``[S,C]`` or ``[N,C,H,W]`` (numpy array or torch tensor;
    see ``as_samples``); the covariance is over the S samples (``ddof=1``, ``[C,C]``), the variance over its C
    eigenvalues (``ddof=0``). ``normalise``: the eigenvalues divided by their mean first (0 for a zero layer)."""
    x = _numpy(as_samples(activations)).astype(np.float64, copy=False)
    if x.shape[0] < 2:
        raise ValueError(f"VECA needs at least 2 samples, got {x.shape[0]}")
    x = x - x.mean(0, keepdims=True)
    cov = x.T @ x / (x.shape[0] - 1)
    eig = np.linalg.eigvalsh(cov)
    if normalise:
        mean = float(eig.mean())
        if mean <= 0:
            return 0.0
        eig = eig / mean
    return float(eig.var())


def edm_penalty(activations: Any, groups: int, eps: float = 1e-5) -> Any:
    """EDM penalty of a layer (a differentiable torch scalar). activations ``[S,C]`` or ``[N,C,H,W]`` torch tensor
    (``as_samples``); units standardised over the S samples, split into ``groups`` contiguous groups of ``C/groups``
    units; returns the mean of the squared correlations between units of different groups (the within-group block
    diagonal of the ``[C,C]`` correlation matrix left out). ``ValueError`` if ``groups`` < 2 or does not divide C."""
    import torch

    x = as_samples(activations)
    s, c = x.shape
    if groups < 2 or c % groups:
        raise ValueError(f"EDM groups must be >= 2 and divide the {c} channels, got {groups}")
    x = x.float()
    # sqrt(var + eps^2), not std + eps: a constant unit (a dead ReLU, one sample) gets a finite gradient, not NaN
    z = (x - x.mean(0, keepdim=True)) / (x.var(0, unbiased=False, keepdim=True) + eps * eps).sqrt()
    corr = z.T @ z / s  # [C,C]
    g = torch.arange(c, device=x.device) // (c // groups)
    off = (g[:, None] != g[None, :]).to(corr.dtype)
    return (corr.square() * off).sum() / off.sum()


class LayerTaps:
    """Forward hooks keeping named layers' outputs: ``layers`` maps a name to ``(module, index)`` (index: which
    element of a tuple output, None for a tensor output). ``outputs`` holds name -> the latest output (detached
    unless ``detach=False``, which keeps the graph for a penalty); ``clear()`` drops them, ``remove()`` the hooks.
    Usable as a context manager (hooks removed on exit)."""

    def __init__(self, layers: dict[str, tuple[Any, int | None]], detach: bool = True) -> None:
        self.detach = detach
        self.outputs: dict[str, Any] = {}
        self.handles = []
        by_module: dict[int, tuple[Any, list[tuple[str, int | None]]]] = {}
        for name, (module, index) in layers.items():
            by_module.setdefault(id(module), (module, []))[1].append((name, index))
        for module, names in by_module.values():
            self.handles.append(module.register_forward_hook(self._hook(names)))

    def _hook(self, names: list[tuple[str, int | None]]) -> Any:
        def keep(_module: Any, _inputs: Any, output: Any) -> None:
            for name, index in names:
                out = output if index is None else output[index]
                self.outputs[name] = out.detach() if self.detach else out
        return keep

    def clear(self) -> None:
        self.outputs.clear()

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []
        self.clear()

    def __enter__(self) -> LayerTaps:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def guided_net_layers(model: Any) -> dict[str, tuple[Any, int | None]]:
    """A ``models.guided_net.GuidedNet``'s taps for ``LayerTaps``: the encoder levels ``mid`` [N,Cm,H/8,W/8],
    ``high`` [N,Ch,H/16,W/16] (and ``low`` [N,Cl,H/4,W/4] for a three-level backbone), over every image the encoder
    sees (support and query), and ``head`` [N,hidden,h,w]: the head's hidden layer (after its ReLU), queries only."""
    levels = ("mid", "high", "low")[: len(model.encoder.channels)]
    layers: dict[str, tuple[Any, int | None]] = {name: (model.encoder, i) for i, name in enumerate(levels)}
    layers["head"] = (model.head[1], None)
    return layers


def layer_channels(model: Any) -> dict[str, int]:
    """The channel count of each of ``guided_net_layers(model)``'s taps."""
    chans = dict(zip(("mid", "high", "low"), model.encoder.channels, strict=False))
    return {**chans, "head": int(model.config.hidden)}
