"""EDM on the online MLPs, and VECA of their hidden layers as a generalisation monitor (issue 19, items 1-2).

    python bench/online_edm.py run --out runs/online_edm [--steps 1000] [--seeds 5] [--workers 2]
    python bench/online_edm.py analyse --out runs/online_edm

Three arms of the paper preset (gantry, 1000 iterations, metrics and VECA every 10 iterations): ``default`` (no
EDM), ``edm0.01`` and ``edm0.1`` (``--edm-weight 0.01`` / ``0.1``, 4 groups per hidden layer), seeds 0..N-1.
``analyse`` writes ``OUT/results.md`` and ``OUT/results.json``:

- EDM: the forward and inverse test MSE at iterations 250 and 1000 and their mean over all logged iterations
  (the curve's AUC / its length), mean +- std over seeds, Welch's t-test against ``default``;
- VECA: Spearman's rho of each ``veca_<model>_h<i>`` column with that model's test MSE (forward layers with
  ``fwd_mse``, inverse layers with ``inv_mse``), over every logged iteration of every seed of ``default``
  (pooled), from iteration 330 on (the memory is full), and within each run; the iteration itself as the
  baseline predictor. Figures: ``OUT/figures/`` (test MSE and VECA curves, mean +- std over seeds).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

AT = (250, 1000)
ARMS: dict[str, dict[str, Any]] = {"default": {}, "edm0.01": {"edm_weight": 0.01, "edm_groups": 4},
                                   "edm0.1": {"edm_weight": 0.1, "edm_groups": 4}}
FULL_MEMORY = 330  # iterations from which the memory (320) is full


def run(out: Path, steps: int, seeds: int, workers: int) -> int:
    from robot.compare import run_configs

    runs = [(f"{arm}/seed{s}", {**kw, "steps": steps, "log_every": 10, "veca_every": 10, "seed": s, "threads": 1,
                                "plots": False, "export": False, "checkpoint_every": 250},
             out / "runs" / arm / f"seed{s}") for arm, kw in ARMS.items() for s in range(seeds)]
    errors = run_configs(runs, workers)
    for e in errors:
        print(e, file=sys.stderr)
    return 1 if errors else 0


def _columns(metrics: Path) -> dict[str, np.ndarray]:
    with open(metrics, newline="") as f:
        rows = list(csv.DictReader(f))
    return {k: np.array([float(r[k]) for r in rows]) for k in rows[0]}


def _errors(cols: dict[str, np.ndarray]) -> dict[str, float]:
    it = cols["iteration"].astype(int)
    out = {f"{k}@{t}": float(cols[k][it == t][0]) for t in AT if np.any(it == t) for k in ("fwd_mse", "inv_mse")}
    out.update({f"{k} mean": float(cols[k].mean()) for k in ("fwd_mse", "inv_mse")})
    return out


def _spearman(runs: list[dict[str, np.ndarray]]) -> list[str]:
    from scipy.stats import spearmanr

    vcols = sorted(k for k in runs[0] if k.startswith("veca_"))
    lines = ["| predictor | test error | all logs: rho (p) | from iteration 330: rho (p) | within each run, from 330 |",
             "|---|---|---|---|---|"]
    for col in [*vcols, "iteration"]:
        for target in ("fwd_mse", "inv_mse") if col == "iteration" else (
                ("fwd_mse",) if col.startswith("veca_fwd") else ("inv_mse",)):
            cells = []
            for start in (0, FULL_MEMORY):
                x, y = [], []
                for r in runs:
                    keep = np.isfinite(r[col]) & (r["iteration"] >= start)
                    x.append(r[col][keep])
                    y.append(r[target][keep])
                res = spearmanr(np.concatenate(x), np.concatenate(y))
                cells.append(f"{res.statistic:+.2f} ({res.pvalue:.1g})")
            within = [spearmanr(a, b).statistic for a, b in zip(x, y, strict=True)]
            lines.append(f"| {col} | {target} | {cells[0]} | {cells[1]} | "
                         + ", ".join(f"{v:+.2f}" for v in within) + " |")
    return lines


def analyse(out: Path) -> dict[str, Any]:
    from arm_table import arm_table, plot_arms

    from microfarm_toolkit import atomic_write_json, atomic_write_text

    per: dict[str, list[dict[str, float]]] = {}
    cols: dict[str, list[dict[str, np.ndarray]]] = {}
    for d in sorted((out / "runs").glob("*/seed*")):
        if (d / "summary.json").is_file():
            c = _columns(d / "metrics.csv")
            cols.setdefault(d.parent.name, []).append(c)
            per.setdefault(d.parent.name, []).append(_errors(c))
    keys = [f"{k}@{t}" for t in AT for k in ("fwd_mse", "inv_mse")] + ["fwd_mse mean", "inv_mse mean"]
    table, lines = arm_table(per, keys)
    lines += ["", "VECA (arm default) against the test error, Spearman:", ""] + _spearman(cols["default"])
    plot_arms(out, list(per), ("fwd_mse", "inv_mse"))
    atomic_write_json(out / "results.json", table)
    atomic_write_text(out / "results.md", "\n".join(lines) + "\n")
    return table


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("what", choices=("run", "analyse"))
    ap.add_argument("--out", type=Path, default=Path("runs/online_edm"))
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    if args.what == "run":
        return run(args.out, args.steps, args.seeds, args.workers)
    analyse(args.out)
    print((args.out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
