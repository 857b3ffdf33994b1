"""The Goldilocks-zone check (Fort & Scherlis): does choosing the online models' initialisation help?

    python bench/goldilocks.py run --out runs/goldilocks [--steps 1000] [--seeds 5] [--candidates 8] [--workers 2]
    python bench/goldilocks.py analyse --out runs/goldilocks

Three arms of the paper preset (gantry, 1000 iterations, metrics every 10): ``default`` (the run seed's
initialisation), ``curvature`` (the highest Tr(H)/||H|| of ``--candidates`` initialisations, ``robot.init_select``)
and ``loss`` (the lowest initial loss of as many), seeds 0..N-1. ``analyse`` reports the forward and inverse test
MSE at iterations 250 and 1000 (mean +- std over seeds) and Welch's t-test of each arm against ``default``, and
writes ``OUT/results.json``, ``OUT/results.md`` and the test-error curves (mean +- std over seeds) in
``OUT/figures/summary.png``.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

AT = (250, 1000)


def arms(candidates: int) -> dict[str, dict[str, Any]]:
    return {"default": {}, "curvature": {"init_candidates": candidates, "init_criterion": "curvature"},
            "loss": {"init_candidates": candidates, "init_criterion": "loss"}}


def run(out: Path, steps: int, seeds: int, candidates: int, workers: int) -> int:
    from robot.compare import run_configs

    runs = [(f"{arm}/seed{s}", {**kw, "steps": steps, "log_every": 10, "seed": s, "threads": 1, "plots": False,
                                "export": False, "checkpoint_every": 250}, out / "runs" / arm / f"seed{s}")
            for arm, kw in arms(candidates).items() for s in range(seeds)]
    errors = run_configs(runs, workers)
    for e in errors:
        print(e, file=sys.stderr)
    return 1 if errors else 0


def _errors(metrics: Path) -> dict[str, float]:
    with open(metrics, newline="") as f:
        rows = {int(float(r["iteration"])): r for r in csv.DictReader(f)}
    return {f"{k}@{t}": float(rows[t][k]) for t in AT if t in rows for k in ("fwd_mse", "inv_mse")}


def analyse(out: Path) -> dict[str, Any]:
    from arm_table import arm_table, plot_arms

    from microfarm_toolkit import atomic_write_json, atomic_write_text

    per: dict[str, list[dict[str, float]]] = {}
    for d in sorted((out / "runs").glob("*/seed*")):
        if (d / "summary.json").is_file():
            per.setdefault(d.parent.name, []).append(_errors(d / "metrics.csv"))
    keys = [f"{k}@{t}" for t in AT for k in ("fwd_mse", "inv_mse")]
    table, lines = arm_table(per, keys)
    plot_arms(out, list(per), ("fwd_mse", "inv_mse"))
    atomic_write_json(out / "results.json", table)
    atomic_write_text(out / "results.md", "\n".join(lines) + "\n")
    return table


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("what", choices=("run", "analyse"))
    ap.add_argument("--out", type=Path, default=Path("runs/goldilocks"))
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--candidates", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    if args.what == "run":
        return run(args.out, args.steps, args.seeds, args.candidates, args.workers)
    analyse(args.out)
    print((args.out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
