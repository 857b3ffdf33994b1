"""Figures of `microfarm compare`: per measure, the mean across seeds of every condition over iterations,
with a +-1 std band (the paper's figures); ``summary.png`` puts the measures side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from microfarm_toolkit import atomic_path

__all__ = ["plot_curves"]

LOG_SCALE = ("fwd_mse", "inv_mse")


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _panel(ax: Any, agg: dict[str, Any], key: str, title: str, legend: bool) -> None:
    n = len(agg)  # tab10's colours are distinct; tab20 (pairs of shades) only where more are needed
    colors, k = (_plt().get_cmap("tab10"), 10) if n <= 10 else (_plt().get_cmap("tab20"), 20)
    for i, (name, a) in enumerate(agg.items()):
        it = a["iteration"]
        mean, std = a["curves"][key]
        c = colors(i % k)
        ax.plot(it, mean, color=c, lw=1.2, label=f"{name} (n={a['n']})")
        lo = np.maximum(mean - std, mean * 0.2) if key in LOG_SCALE else mean - std
        ax.fill_between(it, lo, mean + std, color=c, alpha=0.15, lw=0)
    ax.set(xlabel="iteration", title=title)
    if key in LOG_SCALE:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=7)


def _save(fig: Any, path: Path, dpi: int = 80) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    _plt().close(fig)
    return path


def plot_curves(folder: Path, agg: dict[str, Any], keys: tuple[str, ...], titles: dict[str, str]) -> list[Path]:
    """``folder/<key>.png`` per measure and ``folder/summary.png`` with all of them; returns the paths."""
    plt, folder = _plt(), Path(folder)
    out = []
    for key in keys:
        fig, ax = plt.subplots(figsize=(6.4, 4.0))
        _panel(ax, agg, key, titles.get(key, key), legend=True)
        out.append(_save(fig, folder / f"{key}.png"))
    cols = min(3, len(keys))
    rows = -(-len(keys) // cols)
    fig, axs = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.6 * rows), squeeze=False)
    for i, ax in enumerate(axs.flat):
        if i < len(keys):
            _panel(ax, agg, keys[i], titles.get(keys[i], keys[i]), legend=False)
        else:
            ax.axis("off")
    handles, labels = axs.flat[0].get_legend_handles_labels()
    if len(keys) < rows * cols:  # the legend in the first empty panel, where it covers no curve or label
        axs.flat[len(keys)].legend(handles, labels, loc="center", fontsize=7, frameon=False)
    else:
        fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, bbox_to_anchor=(0.5, -0.02 * rows - 0.04))
    fig.tight_layout()
    out.append(_save(fig, folder / "summary.png"))
    return out
