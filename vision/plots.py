"""PNG plots of segmenter training (loss, validation mIoU) and a grid of example predictions.

matplotlib with the Agg backend (no display needed); every file is written atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from microfarm_toolkit import atomic_path

__all__ = ["plot_curve", "example_grid", "overlay_mask"]


def plot_curve(path: str | Path, steps: Sequence[float], values: Sequence[float], ylabel: str, title: str,
               smooth: int = 0) -> Path:
    """A line plot of ``values`` against ``steps`` (with a moving average over ``smooth`` points if > 1)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    x, y = np.asarray(steps, float), np.asarray(values, float)
    ax.plot(x, y, lw=0.8, alpha=0.45 if smooth > 1 else 1.0, marker="" if smooth > 1 else ".")
    if smooth > 1 and len(y) >= smooth:
        k = np.ones(smooth) / smooth
        ax.plot(x[smooth - 1:], np.convolve(y, k, mode="valid"), lw=1.6, label=f"mean of {smooth}")
        ax.legend()
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def overlay_mask(rgb: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = (255, 40, 200),
                 alpha: float = 0.5) -> np.ndarray:
    """(H,W,3) uint8 RGB with ``mask`` (H,W, non-zero = fg) tinted in ``color`` and outlined."""
    out = rgb.astype(np.float32).copy()
    m = np.asarray(mask) > 0
    out[m] = (1 - alpha) * out[m] + alpha * np.asarray(color, np.float32)
    out = out.astype(np.uint8)
    contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, color, 1)
    return out


def draw_grid_row(axes: Sequence, tiles: Sequence[np.ndarray], cols: Sequence[str] | None, row: dict,
                  names: Sequence[str], fontsize: int, bold: bool = False) -> None:
    """One row of an examples grid: each tile (H,W,3) uint8 in its axis without ticks; column titles ``cols``
    (the first row only, else None), the row's ``title`` on the left, "IoU x" under the predictions (column 3 on,
    from ``row["ious"]`` by ``names``)."""
    for c, tile in enumerate(tiles):
        ax = axes[c]
        ax.imshow(tile)
        ax.set_xticks([])
        ax.set_yticks([])
        if cols is not None:
            ax.set_title(cols[c], fontsize=fontsize + 1, fontweight="bold" if bold else "normal")
        if c == 0:
            ax.set_ylabel(row.get("title", ""), fontsize=fontsize)
        if c >= 3 and "ious" in row:
            ax.set_xlabel(f"IoU {row['ious'][names[c - 3]]:.2f}", fontsize=fontsize)


def example_grid(path: str | Path, rows: Sequence[dict], size: int = 128) -> Path:
    """One row per example: support (with its mask), query, truth, and each named prediction.

    ``rows``: dicts with ``support`` (H,W,3) uint8, ``support_mask`` (H,W), ``query`` (H,W,3) uint8,
    ``truth`` (H,W), ``preds`` {name: (H,W) mask}, and a ``title`` string. Columns are labelled.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows[0]["preds"]) if rows else []
    cols = ["support", "query", "truth", *names]
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(1.9 * len(cols), 1.95 * len(rows)), dpi=100,
                             squeeze=False)

    def small(a: np.ndarray, nearest: bool = False) -> np.ndarray:
        return cv2.resize(a, (size, size), interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)

    for r, row in enumerate(rows):
        q = small(row["query"])
        tiles = [overlay_mask(small(row["support"]), small(row["support_mask"].astype(np.uint8), True)), q,
                 overlay_mask(q, small(row["truth"].astype(np.uint8), True), (40, 220, 255))]
        tiles += [overlay_mask(q, small(row["preds"][n].astype(np.uint8), True)) for n in names]
        draw_grid_row(axes[r], tiles, cols if r == 0 else None, row, names, 8)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
