"""The report side of `microfarm eval-real` (``vision.eval_real``): the IoU tables (``markdown_table``), the
seconds per method (``overall_seconds``) and the examples grid (``example_grid``: one episode per row)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from microfarm_toolkit import atomic_path

__all__ = ["LABELS", "markdown_table", "overall_seconds", "example_grid"]

LABELS = {"network": "network", "pipeline": "pipeline", "exg_otsu": "ExG+Otsu", "exg_chromatic": "ExG chromatic",
          "colour_hist": "colour hist", "network_adapted": "network adapted", "pipeline_adapted": "pipeline adapted"}


def overall_seconds(results: dict[str, Any]) -> dict[str, float]:
    """Seconds per episode of each method over every cell."""
    out = {}
    for m in results["methods"]:
        sec = n = 0.0
        for s in results["sets"].values():
            for c in s["tasks"].values():
                for k in results["shots"]:
                    if str(k) in c:
                        r = c[str(k)][m]
                        sec += r["seconds_per_episode"] * r["episodes"]
                        n += r["episodes"]
        if n:
            out[m] = sec / n
    return out


def markdown_table(results: dict[str, Any]) -> str:
    """Rows set / task, columns method x shots: IoU (summed intersections / summed unions) in 0..1."""
    shots, methods = results["shots"], results["methods"]
    cols = [(m, k) for m in methods for k in shots]

    def table(key: str) -> list[str]:
        lines = ["| set / task | " + " | ".join(f"{LABELS.get(m, m)} {k}-shot" for m, k in cols) + " |",
                 "| --- |" + " ---: |" * len(cols)]
        for name, s in results["sets"].items():
            for task, c in s["tasks"].items():
                cells = [f"{c[str(k)][m][key]:.3f}" if str(k) in c else "-" for m, k in cols]
                lines.append(f"| {name} / {task} | " + " | ".join(cells) + " |")
        return lines

    cfg = results["config"]
    eps = sorted({c[str(k)]["network"]["episodes"] for s in results["sets"].values() for c in s["tasks"].values()
                  for k in shots if str(k) in c})
    lines = ["IoU (intersections / unions summed over the episodes):", "", *table("iou"), ""]
    note = (f"{'/'.join(map(str, eps)) or 0} episodes per cell (seed {cfg['seed']}); photos scored with the long side "
            f"at {cfg['max_side']} px, network input {cfg['imgsz']}x{cfg['imgsz']}; query and every support hold >= "
            f"{cfg['min_pixels']} pixels of the class. Peanut: queries from its fixed query split (every fifth "
            "photo), supports from the other 320; CWF-788: query and supports from its test split. network: the "
            f"guided network alone; pipeline: {results.get('pipeline', 'the segment pipeline')}; ExG+Otsu ignores "
            "the support; colour hist: the support's colour histogram.")
    kept = [f"{n}/{t} {k}-shot {100 * c[str(k)]['pipeline']['crf_kept']:.0f}%"
            for n, s in results["sets"].items() for t, c in s["tasks"].items() for k in shots
            if str(k) in c and "crf_kept" in c[str(k)]["pipeline"]]
    if kept:
        note += " The gate kept the CRF for " + ", ".join(kept) + " of the episodes."
    sec = results.get("seconds_per_episode") or {}
    if sec:
        note += " Seconds per episode: " + ", ".join(f"{LABELS.get(m, m)} {v:.3f}" for m, v in sec.items()) + "."
    skipped = [f"{n}/{t}: {c['skipped']}" for n, s in results["sets"].items() for t, c in s["tasks"].items()
               if "skipped" in c]
    if skipped:
        note += " Skipped: " + "; ".join(skipped) + "."
    lines += [note, "", "Mean per-episode IoU:", "", *table("mean_iou")]
    return "\n".join(lines) + "\n"


def _tile(a: np.ndarray, w: int, h: int, nearest: bool = False) -> np.ndarray:
    return cv2.resize(a, (w, h), interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)


def _outline(rgb: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    out = rgb.copy()
    cv2.drawContours(out, contours, -1, colour, 1)
    return out


def example_grid(path: Path, rows: list[dict[str, Any]], title: str, width: int = 240) -> Path:
    """A grid, one episode per row: support (mask tinted and outlined), query, truth (cyan), and each method's
    prediction (magenta, the truth outlined in cyan); a header names the columns, IoUs under the predictions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vision.plots import draw_grid_row, overlay_mask

    names = list(rows[0]["preds"])
    cols = ["support + mask", "query", "truth", *(LABELS.get(n, n) for n in names)]
    h0, w0 = rows[0]["query"].shape[:2]
    height = int(round(width * h0 / w0))
    col_w = 2.3  # inches per column; a row is a tile of the photos' aspect plus room for its labels
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(col_w * len(cols) + 0.3,
                                                            0.6 + len(rows) * (col_w * h0 / w0 + 0.35)),
                             dpi=100, squeeze=False)
    cyan, magenta = (40, 220, 255), (255, 40, 200)
    for r, row in enumerate(rows):
        q = _tile(row["query"], width, height)
        truth = _tile(row["truth"].astype(np.uint8), width, height, True)
        tiles = [overlay_mask(_tile(row["support"], width, height),
                              _tile(row["support_mask"].astype(np.uint8), width, height, True), magenta, 0.4),
                 q, overlay_mask(q, truth, cyan, 0.45)]
        tiles += [_outline(overlay_mask(q, _tile(row["preds"][n].astype(np.uint8), width, height, True), magenta, 0.5),
                           truth, cyan) for n in names]
        draw_grid_row(axes[r], tiles, cols if r == 0 else None, row, names, 9, bold=True)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()))  # keep the top 0.3 inch for the title
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
