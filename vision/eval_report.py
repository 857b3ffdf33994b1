"""The report of `microfarm eval-segmenter` (``vision.evaluate``): the methods it scores, their labels and the
markdown table of ``results.md`` (also of merged runs, ``vision.eval_merge``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from models.scales import input_sides

__all__ = ["NET_METHODS", "COLOUR_METHODS", "BASELINES", "METHODS", "LABELS", "SHORT", "markdown_table"]

NET_METHODS = ("none", "dense", "meanfield")
COLOUR_METHODS = ("colour", "colour_dense", "colour_meanfield")
BASELINES = ("exg_otsu", "histogram")
METHODS = NET_METHODS + COLOUR_METHODS + BASELINES
LABELS = {"none": "guided net", "none_subset": "guided net (on the CRF episodes)",
          "dense": "guided net + dense CRF", "meanfield": "guided net + mean-field CRF",
          "colour": "guided net + colour prior", "colour_subset": "guided net + colour prior (on the CRF episodes)",
          "colour_dense": "guided net + colour prior + dense CRF",
          "colour_meanfield": "guided net + colour prior + mean-field CRF",
          "dense_gated": "guided net + dense CRF, gated", "meanfield_gated": "guided net + mean-field CRF, gated",
          "colour_dense_gated": "guided net + colour prior + dense CRF, gated",
          "colour_meanfield_gated": "guided net + colour prior + mean-field CRF, gated",
          "exg_otsu": "ExG + Otsu (baseline)", "histogram": "colour histogram (baseline)"}

SHORT = {"none": "net", "dense": "net+dense CRF", "meanfield": "net+mean-field", "colour": "net+colour",
         "colour_dense": "net+colour+dense", "colour_meanfield": "net+colour+MF", "dense_gated": "net+dense gated",
         "meanfield_gated": "net+MF gated", "colour_dense_gated": "net+colour+dense gated",
         "colour_meanfield_gated": "net+colour+MF gated", "exg_otsu": "ExG+Otsu", "histogram": "histogram"}


def markdown_table(results: dict[str, Any]) -> str:
    """The results as a markdown table: one row per method, mIoU / FB-IoU per fold x shots (in %)."""
    folds = sorted(results["folds"], key=int)
    shots = results["shots"]
    cols = [(f, k) for f in folds for k in shots]
    multi = len(folds) > 1
    head = [f"fold {f} {k}-shot mIoU / FB-IoU" for f, k in cols]
    head += [f"mean {k}-shot mIoU" for k in shots] if multi else []
    lines = ["| method | " + " | ".join(head) + " |", "| --- |" + " --- |" * len(head)]
    for m in results["methods"]:
        cells = []
        for f, k in cols:
            r = results["folds"][f][str(k)].get(m)
            cells.append(f"{100 * r['miou']:.1f} / {100 * r['fb_iou']:.1f}" if r else "-")
        if multi:
            for k in shots:
                v = [results["folds"][f][str(k)][m]["miou"] for f in folds if m in results["folds"][f][str(k)]]
                cells.append(f"{100 * np.mean(v):.1f}" if v else "-")
        lines.append(f"| {LABELS.get(m, m)} | " + " | ".join(cells) + " |")
    n = {f"{f}/{k}": results["folds"][f][str(k)] for f, k in cols}
    any_r = next(iter(n.values()))
    eps = next(iter(any_r.values()))["episodes"]
    note = f"\n{eps} episodes per fold and shot count"
    crf_eps = results["config"].get("crf_episodes") or 0
    if crf_eps and crf_eps < results["config"]["episodes"]:
        note += f"; the CRF rows are on the first {crf_eps} of them (the other rows on all)"
    sides = input_sides(results["config"]["imgsz"], results["config"].get("scales") or [])
    note += f"; network input {' and '.join(f'{s}x{s}' for s in sides)}" + (
        " (probabilities averaged)" if len(sides) > 1 else "") + ", scored at the dataset's size."
    sec = results.get("seconds_per_frame", {})
    if sec:
        note += (" Seconds per frame (network: the guide from the support plus the prediction, per episode; CRFs:"
                 " the CRF alone; gated CRFs: the gate's check (the network, colour prior and CRF on each support"
                 " image) plus the CRF on the query when it runs, per episode; baselines: fit and predict): ")
        note += ", ".join(f"{LABELS.get(m, m)} {v:.4f}" for m, v in sec.items()) + "."
    kept = [m for m in results["methods"] if any("crf_kept" in results["folds"][f][str(k)].get(m, {})
                                                  for f, k in cols)]
    for m in kept:
        cells = [f"{100 * results['folds'][f][str(k)][m]['crf_kept']:.0f}%" if "crf_kept" in results["folds"][f][
            str(k)].get(m, {}) else "-" for f, k in cols]
        note += (f" {LABELS.get(m, m)}: the gate kept the CRF for {', '.join(cells)} of the episodes "
                 f"({', '.join(f'fold {f} {k}-shot' for f, k in cols)}).")
    return "\n".join(lines) + "\n" + note + "\n" + _absent_table(results, cols)


def _absent_table(results: dict[str, Any], cols: list[tuple[str, int]]) -> str:
    """The frames-without-the-class table (``--absent``): mean % of the frame marked / % of frames with > 1%."""
    cell = {m: [results["folds"][f][str(k)].get(m, {}) for f, k in cols] for m in results["methods"]}
    if not any("absent_marked" in r for rs in cell.values() for r in rs):
        return ""
    head = [f"fold {f} {k}-shot" for f, k in cols]
    lines = ["", "Frames WITHOUT the class asked for (the same supports): mean % of the frame marked / % of frames "
             "with more than 1% marked (lower is better) / feed mIoU, the mIoU when those marked pixels count as "
             "false positives too (one such frame per episode; higher is better)", "",
             "| method | " + " | ".join(head) + " |", "| --- |" + " --- |" * len(head)]
    for m in results["methods"]:
        vals = [f"{100 * r['absent_marked']:.1f} / {100 * r['absent_alarm']:.0f} / "
                + (f"{100 * r['feed_miou']:.1f}" if "feed_miou" in r else "-")  # runs from before feed mIoU
                if "absent_marked" in r else "-" for r in cell[m]]
        lines.append(f"| {LABELS.get(m, m)} | " + " | ".join(vals) + " |")
    return "\n".join(lines) + "\n"
