"""EDM on the online MLPs, and VECA of their hidden layers as a generalisation monitor (issue 19, items 1-2).

    python bench/online_edm.py run --out runs/online_edm [--steps 1000] [--seeds 5] [--workers 2]
    python bench/online_edm.py analyse --out runs/online_edm

Three arms of the paper preset (gantry, 1000 iterations, metrics and VECA every 10 iterations): ``default`` (no
EDM), ``edm0.01`` and ``edm0.1`` (``--edm-weight 0.01`` / ``0.1``, 4 groups per hidden layer), seeds 0..N-1.
``analyse`` writes ``OUT/results.md`` and ``OUT/results.json``:

- EDM: the forward and inverse test MSE at iterations 250 and 1000 and their mean over all logged iterations
  (the curve's AUC / its length), mean +- std over seeds, Welch's t-test against ``default``; and the EDM penalty
  of the final forward model's hidden layers on 512 uniform motor positions (did EDM decorrelate them?);
- VECA: Spearman's rho of each ``veca_<model>_h<i>`` column with that model's test MSE (forward layers with
  ``fwd_mse``, inverse layers with ``inv_mse``), over every logged iteration of every seed of ``default``
  (pooled), from iteration 330 on (the memory is full), and within each run; the iteration itself as the
  baseline predictor. Figures: ``OUT/figures/summary.png`` (test MSE curves of the arms, mean +- std over
  seeds) and ``OUT/figures/veca.png`` (VECA over iterations, test MSE against VECA).
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


def _final_edm(run: Path, groups: int = 4) -> dict[str, float]:
    """EDM penalty (``groups`` groups) of the final forward model's hidden layers on 512 uniform motor positions
    (seeded): did the penalty decorrelate them?"""
    import torch

    from models.mlp import forward_model
    from models.veca import edm_penalty
    from models.weights import load_into, read_metadata

    path = run / "weights" / "forward.safetensors"
    cfg = read_metadata(path)["config"]
    model = forward_model(int(cfg["in_dim"]), int(cfg["out_dim"]), tuple(cfg["hidden"]))
    load_into(model, path, kind="forward_mlp")
    h, out = torch.rand(512, int(cfg["in_dim"]), generator=torch.Generator().manual_seed(0)), {}
    with torch.no_grad():
        for i, lin in enumerate(model.layers[:-1]):
            h = torch.tanh(lin(h))
            out[f"fwd EDM h{i}"] = float(edm_penalty(h, groups))
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


def _veca_figure(runs: list[dict[str, np.ndarray]], path: Path) -> None:
    """(a) the last hidden layers' VECA over iterations, one line per seed; (b, c) the test MSE against that VECA
    from iteration 330 on, one colour per seed (forward, inverse)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from microfarm_toolkit import atomic_path

    fig, ax = plt.subplots(1, 3, figsize=(15, 3.8))
    for s, r in enumerate(runs):
        k = np.isfinite(r["veca_fwd_h1"])
        ax[0].plot(r["iteration"][k], r["veca_fwd_h1"][k], color=f"C{s}", lw=1, label=f"seed {s} forward")
        ax[0].plot(r["iteration"][k], r["veca_inv_h1"][k], color=f"C{s}", lw=1, ls="--", label=f"seed {s} inverse")
        late = k & (r["iteration"] >= FULL_MEMORY)
        ax[1].scatter(r["veca_fwd_h1"][late], r["fwd_mse"][late], s=6, color=f"C{s}", label=f"seed {s}")
        ax[2].scatter(r["veca_inv_h1"][late], r["inv_mse"][late], s=6, color=f"C{s}", label=f"seed {s}")
    ax[0].set(xlabel="iteration", ylabel="VECA", yscale="log", title="(a) VECA of the last hidden layer")
    ax[0].legend(fontsize=6, ncol=2)
    ax[1].set(xlabel="VECA, forward model's last hidden layer", ylabel="forward test MSE",
              title=f"(b) forward model, iterations >= {FULL_MEMORY}")
    ax[2].set(xlabel="VECA, inverse model's last hidden layer", ylabel="inverse test MSE",
              title=f"(c) inverse model, iterations >= {FULL_MEMORY}")
    for a in ax[1:]:
        a.legend(fontsize=7)
    for a in ax:
        a.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, bbox_inches="tight", format="png")
    plt.close(fig)


def analyse(out: Path) -> dict[str, Any]:
    from arm_table import arm_table, plot_arms

    from microfarm_toolkit import atomic_write_json, atomic_write_text

    per: dict[str, list[dict[str, float]]] = {}
    cols: dict[str, list[dict[str, np.ndarray]]] = {}
    for d in sorted((out / "runs").glob("*/seed*")):
        if (d / "summary.json").is_file():
            c = _columns(d / "metrics.csv")
            cols.setdefault(d.parent.name, []).append(c)
            per.setdefault(d.parent.name, []).append({**_errors(c), **_final_edm(d)})
    keys = ([f"{k}@{t}" for t in AT for k in ("fwd_mse", "inv_mse")] + ["fwd_mse mean", "inv_mse mean"]
            + sorted(k for k in per["default"][0] if k.startswith("fwd EDM")))
    table, lines = arm_table(per, keys)
    lines += ["", "VECA (arm default) against the test error, Spearman:", ""] + _spearman(cols["default"])
    plot_arms(out, list(per), ("fwd_mse", "inv_mse"))
    _veca_figure(cols["default"], out / "figures" / "veca.png")
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
