"""The table of a multi-arm, multi-seed bench: mean +- std per arm and measure, Welch's t-test against a base arm.

Used by ``bench/goldilocks.py`` and ``bench/online_edm.py``; ``arm_table(per, keys)`` returns the table (for
``results.json``) and its markdown lines (for ``results.md``); ``plot_arms`` draws the arms' curves.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["arm_table", "plot_arms"]


def arm_table(per: dict[str, list[dict[str, float]]], keys: list[str], base: str = "default"
              ) -> tuple[dict[str, Any], list[str]]:
    """per: arm -> one dict of measures per seed; keys: the measures (columns). Each cell: mean, std (ddof 0), n
    and, for arms other than ``base`` with two or more seeds on both sides, the ratio of the means to ``base``'s
    and Welch's p."""
    from scipy.stats import ttest_ind

    table: dict[str, Any] = {}
    for arm, rs in per.items():
        table[arm] = {}
        for k in keys:
            vals = [r[k] for r in rs if k in r]
            if not vals:
                continue
            row = {"mean": float(np.mean(vals)), "std": float(np.std(vals)), "n": len(vals)}
            ref = [r[k] for r in per.get(base, []) if k in r]
            if arm != base and len(ref) >= 2 and len(vals) >= 2:
                row["ratio_to_default"] = row["mean"] / float(np.mean(ref))
                row["welch_p"] = float(ttest_ind(vals, ref, equal_var=False).pvalue)
            table[arm][k] = row
    lines = ["| arm | n | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for arm, row in table.items():
        cells = []
        for k in keys:
            r = row.get(k)
            if r is None:
                cells.append("-")
                continue
            extra = f" ({r['ratio_to_default']:.3f}x, p {r['welch_p']:.2g})" if "welch_p" in r else ""
            cells.append(f"{r['mean']:.4g} ± {r['std']:.2g}{extra}")
        n = max((r["n"] for r in row.values()), default=0)
        lines.append(f"| {arm} | {n} | " + " | ".join(cells) + " |")
    return table, lines


def plot_arms(out: Any, arms: list[str], keys: tuple[str, ...], seeds: int = 100) -> list[Any]:
    """``OUT/figures/<key>.png`` and ``summary.png``: each arm's mean +- std over seeds of the ``metrics.csv``
    columns ``keys`` over iterations, for runs in ``OUT/runs/<arm>/seed<s>`` (``robot.compare``'s layout)."""
    from pathlib import Path

    from robot.compare_plots import plot_curves
    from robot.compare_report import aggregate

    agg = aggregate(Path(out), [(a, {}) for a in arms], list(range(seeds)))
    return plot_curves(Path(out) / "figures", agg, keys, {"fwd_mse": "forward test MSE", "inv_mse": "inverse test MSE"})
