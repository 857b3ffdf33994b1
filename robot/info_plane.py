"""The information plane of the autoencoder during `microfarm train-encoder` (Jónsson et al., Entropy 2020), by MINE.

At each point (epoch 0 = the initialisation, every ``--info-plane-every`` epochs, and the last epoch) the autoencoder
runs in eval mode on ``--mine-samples`` training images; forward hooks record every hidden layer T:

    enc1..encK  the encoder's levels (after each Conv-ReLU-MaxPool block), (N, C_k, S/2^k, S/2^k)
    code        the code (the encoder's Linear), (N, code_size)
    dec1..decK  the decoder's levels (after each Upsample-Conv-ReLU block), (N, C, ., .)

X is the input image and Y the **reconstruction** (the network's output; an autoencoder has no label). X, Y and
every T are reduced by ``models.mine.flatten_reduce`` (average pool to at most 8x8 cells per channel, then a fixed
seeded random projection to at most ``DIMS`` numbers; a different fixed matrix per layer), and I(X;T), I(T;Y) are
MINE estimates (nats) of the reduced variables, with the same seed at every epoch so that the points of one layer
differ by the network, not the estimator's draw. Rows go to ``info_plane.csv`` (epoch, layer, i_xt, i_ty) and the
figure to ``info_plane.png`` (x: I(X;T), y: I(T;Y), one marker and line per layer, colour = epoch).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import torch
from torch import nn

from microfarm_toolkit import atomic_path, atomic_write_text
from models.autoencoder import ConvAutoencoder
from models.mine import flatten_reduce, mine_estimate

__all__ = ["DIMS", "hidden_layers", "reduced_activations", "info_plane_rows", "write_info_plane"]

DIMS = 64  # numbers per reduced variable (X: the 8x8 average-pooled gray image)
FIELDS = ("epoch", "layer", "i_xt", "i_ty")


def hidden_layers(ae: ConvAutoencoder) -> list[tuple[str, nn.Module]]:
    """The modules whose outputs are the hidden layers, input side first: (name, module)."""
    enc = [m for m in ae.encoder.features if isinstance(m, nn.MaxPool2d)]
    dec = [m for m in ae.decoder.net if isinstance(m, nn.ReLU)]
    return ([(f"enc{i + 1}", m) for i, m in enumerate(enc)] + [("code", ae.encoder.fc)]
            + [(f"dec{i + 1}", m) for i, m in enumerate(dec)])


@torch.no_grad()
def reduced_activations(ae: ConvAutoencoder, x: torch.Tensor, batch: int = 16, seed: int = 0
                        ) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """x: (N, C, S, S) float32 in [0, 1] -> (X (N, <=DIMS), {layer: T (N, <=DIMS)}, Y (N, <=DIMS)), all float32
    and reduced by ``flatten_reduce`` (layer k's projection seeded ``seed + 1 + k``, X's and Y's ``seed``). Runs in
    eval mode in batches (the hooks reduce each batch at once, so full-size maps are never kept) and restores the
    module's training flag."""
    layers = hidden_layers(ae)
    parts: dict[str, list[np.ndarray]] = {name: [] for name, _ in layers}
    hooks = []
    for k, (name, mod) in enumerate(layers):
        def hook(_m: nn.Module, _i: object, out: torch.Tensor, name: str = name, k: int = k) -> None:
            parts[name].append(flatten_reduce(out, DIMS, seed + 1 + k))
        hooks.append(mod.register_forward_hook(hook))
    was_training = ae.training
    ae.eval()
    ys: list[np.ndarray] = []
    try:
        for s in range(0, len(x), batch):
            ys.append(flatten_reduce(ae(x[s:s + batch]), DIMS, seed))
    finally:
        for h in hooks:
            h.remove()
        ae.train(was_training)
    return flatten_reduce(x, DIMS, seed), {n: np.concatenate(p) for n, p in parts.items()}, np.concatenate(ys)


def info_plane_rows(ae: ConvAutoencoder, x: torch.Tensor, epoch: int, steps: int, seed: int = 0
                    ) -> list[dict[str, float | int | str]]:
    """MINE estimates for every hidden layer at this point: [{epoch, layer, i_xt, i_ty}] (nats), input side first."""
    xr, ts, yr = reduced_activations(ae, x, seed=seed)
    rows: list[dict[str, float | int | str]] = []
    for k, (name, t) in enumerate(ts.items()):
        i_xt = mine_estimate(xr, t, steps=steps, seed=seed + 2 * k)
        i_ty = mine_estimate(t, yr, steps=steps, seed=seed + 2 * k + 1)
        rows.append({"epoch": epoch, "layer": name, "i_xt": round(i_xt, 5), "i_ty": round(i_ty, 5)})
    return rows


def write_info_plane(out: Path, rows: list[dict[str, float | int | str]]) -> None:
    """Write ``out/info_plane.csv`` (columns epoch, layer, i_xt, i_ty; atomically) and ``out/info_plane.png``."""
    if not rows:
        raise ValueError("no information-plane rows to write")
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(Path(out) / "info_plane.csv", buf.getvalue())
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = list(dict.fromkeys(str(r["layer"]) for r in rows))
    epochs = [int(r["epoch"]) for r in rows]
    norm = plt.Normalize(min(epochs), max(max(epochs), min(epochs) + 1))
    markers = "osD^v<>phX*8"
    fig, ax = plt.subplots(figsize=(7, 5))
    for i, name in enumerate(layers):
        rs = sorted((r for r in rows if r["layer"] == name), key=lambda r: int(r["epoch"]))
        xs, ys = [float(r["i_xt"]) for r in rs], [float(r["i_ty"]) for r in rs]
        colour = plt.cm.tab10(i % 10)
        ax.plot(xs, ys, "-", color=colour, lw=1, alpha=0.6)
        sc = ax.scatter(xs, ys, c=[int(r["epoch"]) for r in rs], cmap="viridis", norm=norm, s=45,
                        marker=markers[i % len(markers)], edgecolors=colour, linewidths=1.2, zorder=3)
    handles = [plt.Line2D([], [], color=plt.cm.tab10(i % 10), marker=markers[i % len(markers)], mfc="white",
                          lw=1, label=name) for i, name in enumerate(layers)]
    ax.legend(handles=handles, title="layer T", fontsize=8, loc="best")
    fig.colorbar(sc, ax=ax, label="epoch")
    ax.set(xlabel="I(X;T)  [nats]  (X = input)", ylabel="I(T;Y)  [nats]  (Y = reconstruction)",
           title="information plane of the autoencoder (MINE estimates)")
    ax.grid(alpha=0.3)
    with atomic_path(Path(out) / "info_plane.png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
