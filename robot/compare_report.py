"""The report of `microfarm compare`: reads each run's ``metrics.csv`` / ``summary.json``, aggregates the
measures across seeds per condition and writes ``table.csv``, ``table.md``, ``curves.csv`` and the paper-style
figures (``figures/``, drawn by ``robot.compare_plots``).

The measures (AUC, forgetting, kept-region change, rise) are described in ``robot.compare``; see
``_run_measures`` for the forgetting probe.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from microfarm_toolkit import atomic_write_text

__all__ = ["aggregate", "write_report", "rise", "fmt_value", "CURVE_KEYS", "CURVE_TITLES", "TABLE_METRICS",
           "TABLE_TITLES"]

CURVE_KEYS = ("fwd_mse", "inv_mse", "area", "forgetting", "rise", "fwd_mse_learn", "distractor_moves",
              "coverage_learn")
CURVE_TITLES = {"fwd_mse": "forward model test MSE (code)", "inv_mse": "inverse model test MSE (motor)",
                "area": "explored area (convex hull)", "forgetting": "forgetting (regions left)",
                "rise": "error rise above best so far", "fwd_mse_learn": "forward test MSE, learnable part",
                "distractor_moves": "share of moves into the distractor", "coverage_learn": "learnable cells visited"}
# issue-18 measures (robot.conditions): runs written before them have NaN there
CONDITION_KEYS = ("fwd_mse_learn", "inv_mse_learn", "distractor_moves", "unreachable_choices", "coverage_learn")


def fmt_value(v: Any) -> str:
    """A grid value as condition names and tables show it (lists as ``320x320``)."""
    if isinstance(v, list):
        return "x".join(map(str, v))
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


# -- aggregation --------------------------------------------------------------------------------------
def _read_metrics(path: Path) -> dict[str, list[float]]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    cols: dict[str, list[float]] = {}
    for r in rows:
        for k, v in r.items():
            try:
                cols.setdefault(k, []).append(float(v))
            except (TypeError, ValueError):
                cols.setdefault(k, []).append(math.nan)
    return cols


def rise(cols: dict[str, list[float]]) -> list[float]:
    """Per log: mean over regions of (regional forward test MSE - its lowest value so far)."""
    import numpy as np

    keys = [k for k in cols if k.startswith("fwd_mse_r")]
    if not keys:
        keys = ["fwd_mse"]
    reg = np.array([cols[k] for k in keys], dtype=float)  # (R, T)
    best = np.fmin.accumulate(reg, axis=1)
    return np.nanmean(reg - best, axis=0).tolist()


def _time_avg(x: Any, y: Any) -> float:
    import numpy as np

    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2:
        return float(y[-1]) if len(y) else math.nan
    return float(np.trapezoid(y, x) / (x[-1] - x[0]))


TABLE_METRICS = ("fwd_mse_final", "fwd_mse_auc", "inv_mse_final", "inv_mse_auc", "area_final",
                 "forgetting_end", "forgetting_rel", "kept_change", "forgetting_auc", "rise_auc",
                 "fwd_mse_learn_auc", "inv_mse_learn_auc", "distractor_moves_final", "unreachable_choices_final",
                 "coverage_learn_final", "wall_s")
TABLE_TITLES = ("fwd MSE final", "fwd MSE AUC", "inv MSE final", "inv MSE AUC", "area final", "forgetting end",
                "forgetting rel", "kept-region change", "forgetting AUC", "rise AUC", "fwd MSE AUC learnable",
                "inv MSE AUC learnable", "moves into distractor", "unreachable goal choices", "learnable coverage",
                "wall s")


def _run_measures(cols: dict[str, list[float]], summary: dict[str, Any]) -> dict[str, float]:
    """Per-run measures. With a forgetting probe (config ``leave_region`` R >= 0, ``leave_at`` T) the error and
    area measures stop at T (the exploration proper) and the probe's come from the iterations after T:
    forgetting_end = mean ``forgetting`` over the last LEAVE_BASELINE iterations, forgetting_rel = that over
    R's baseline error, kept_change = the other regions' error change over the probe (plasticity)."""
    import numpy as np

    from robot.explore_state import LEAVE_BASELINE

    cfg = summary.get("config", {})
    region, leave_at = int(cfg.get("leave_region", -1)), int(cfg.get("leave_at", 0))
    it = np.asarray(cols["iteration"], float)
    col = {k: np.asarray(v, float) for k, v in cols.items()}
    pre = it <= leave_at if region >= 0 and np.any(it <= leave_at) else np.ones(len(it), bool)
    end = it > it[-1] - LEAVE_BASELINE
    m = {"fwd_mse_final": col["fwd_mse"][pre][-1], "fwd_mse_auc": _time_avg(it[pre], col["fwd_mse"][pre]),
         "inv_mse_final": col["inv_mse"][pre][-1], "inv_mse_auc": _time_avg(it[pre], col["inv_mse"][pre]),
         "area_final": col["area"][pre][-1], "forgetting_end": float(np.mean(col["forgetting"][end])),
         "forgetting_rel": math.nan, "kept_change": math.nan,
         "forgetting_auc": _time_avg(it, col["forgetting"]), "rise_auc": _time_avg(it[pre], col["rise"][pre]),
         "wall_s": float(summary.get("wall_time_s", math.nan))}
    nan = np.full(len(it), math.nan)
    learn = {k: col.get(k, nan)[pre] for k in CONDITION_KEYS}
    m.update({"fwd_mse_learn_auc": _time_avg(it[pre], learn["fwd_mse_learn"]),
              "inv_mse_learn_auc": _time_avg(it[pre], learn["inv_mse_learn"]),
              "distractor_moves_final": float(learn["distractor_moves"][-1]),
              "unreachable_choices_final": float(learn["unreachable_choices"][-1]),
              "coverage_learn_final": float(learn["coverage_learn"][-1])})
    if region >= 0 and f"fwd_mse_r{region}" in col:
        base = (it > leave_at - LEAVE_BASELINE) & (it <= leave_at)
        regs = [r for r in range(4) if f"fwd_mse_r{r}" in col]
        b = {r: float(np.nanmean(col[f"fwd_mse_r{r}"][base])) for r in regs}
        e = {r: float(np.nanmean(col[f"fwd_mse_r{r}"][end])) for r in regs}
        m["forgetting_rel"] = (e[region] - b[region]) / b[region] if b[region] > 0 else math.nan
        m["kept_change"] = float(np.mean([e[r] - b[r] for r in regs if r != region]))
        post = it > leave_at
        m["forgetting_auc"] = _time_avg(it[post], col["forgetting"][post])
    return m


def aggregate(root: Path, conds: list[tuple[str, dict[str, Any]]], seeds: list[int]) -> dict[str, Any]:
    """Per condition: ``n``, ``values``, per-run measures' mean/std, and mean/std curves over iterations."""
    import numpy as np

    result: dict[str, Any] = {}
    for name, values in conds:
        runs = []
        for s in seeds:
            d = root / "runs" / name / f"seed{s}"
            if (d / "summary.json").is_file() and (d / "metrics.csv").is_file():
                cols = _read_metrics(d / "metrics.csv")
                if not cols.get("iteration"):
                    continue
                cols["rise"] = rise(cols)
                runs.append((cols, json.loads((d / "summary.json").read_text())))
        if not runs:
            continue
        n_it = min(len(c["iteration"]) for c, _ in runs)
        it = np.array(runs[0][0]["iteration"][:n_it])
        curves = {}
        for k in CURVE_KEYS:
            a = np.array([c.get(k, [math.nan] * n_it)[:n_it] for c, _ in runs], dtype=float)
            curves[k] = (a.mean(0), a.std(0))
        measures = [_run_measures(c, s) for c, s in runs]
        stats = {m: (float(np.mean([x[m] for x in measures])), float(np.std([x[m] for x in measures])))
                 for m in TABLE_METRICS}  # NaN where a measure does not apply (no goal-directed move yet)
        result[name] = {"values": values, "n": len(runs), "iteration": it, "curves": curves, "stats": stats}
    return result


def _sig(x: float) -> str:
    return "nan" if not math.isfinite(x) else f"{x:.3g}"


def shown_curves(agg: dict[str, Any]) -> tuple[str, ...]:
    """The curve keys worth a figure: those with a finite value that is not 0 in some condition (forgetting
    without a probe or a left region, and the distractor share without a distractor, are flat zero lines)."""
    import numpy as np

    def informative(k: str) -> bool:
        vals = np.concatenate([np.asarray(a["curves"][k][0], float) for a in agg.values()])
        vals = vals[np.isfinite(vals)]
        return bool(len(vals)) and bool(np.any(vals != 0))

    return tuple(k for k in CURVE_KEYS if informative(k))


def write_report(root: Path, agg: dict[str, Any], axes: list[str]) -> list[Path]:
    """table.csv, table.md, curves.csv and figures/*.png in ``root``; returns the paths written."""
    written = []
    header = ["condition", *axes, "n"] + [f"{m}_{s}" for m in TABLE_METRICS for s in ("mean", "std")]
    lines = [",".join(header)]
    for name, a in agg.items():
        vals = [fmt_value(a["values"].get(k, "")) if k in a["values"] else "" for k in axes]
        nums = [f"{a['stats'][m][i]:.6g}" for m in TABLE_METRICS for i in (0, 1)]
        lines.append(",".join([f'"{name}"', *vals, str(a["n"]), *nums]))
    atomic_write_text(root / "table.csv", "\n".join(lines) + "\n")
    md_cols = ["condition", "n", *TABLE_TITLES]
    md = ["| " + " | ".join(md_cols) + " |", "|" + "---|" * len(md_cols)]
    for name, a in agg.items():
        cells = [f"`{name}`", str(a["n"])] + [f"{_sig(a['stats'][m][0])} ± {_sig(a['stats'][m][1])}"
                                              for m in TABLE_METRICS]
        md.append("| " + " | ".join(cells) + " |")
    atomic_write_text(root / "table.md", "\n".join(md) + "\n")
    clines = ["condition,iteration," + ",".join(f"{k}_{s}" for k in CURVE_KEYS for s in ("mean", "std"))]
    for name, a in agg.items():
        for j, t in enumerate(a["iteration"]):
            nums = [f"{a['curves'][k][i][j]:.6g}" for k in CURVE_KEYS for i in (0, 1)]
            clines.append(",".join([f'"{name}"', str(int(t)), *nums]))
    atomic_write_text(root / "curves.csv", "\n".join(clines) + "\n")
    written += [root / "table.csv", root / "table.md", root / "curves.csv"]
    if agg:
        from robot.compare_plots import plot_curves

        written += plot_curves(root / "figures", agg, shown_curves(agg), CURVE_TITLES)
    return written
