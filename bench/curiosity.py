"""The pre-registered curiosity comparison of docs/curiosity_prereg.md: run the grid, then test the hypotheses.

    python bench/curiosity.py run --out runs/curiosity [--steps 1000] [--seeds 5] [--workers 2]
    python bench/curiosity.py analyse --out runs/curiosity [--doc docs/curiosity_results.md]

``run`` executes the 10 cells (condition x arm) x seeds through ``microfarm compare``'s runner, in one process
pool; each run goes to ``OUT/runs/<condition>/<arm>/seed<k>/``; a re-run skips finished runs and resumes
interrupted ones. ``analyse`` reads every run's ``metrics.csv``, computes the pre-registered measures M1-M3 (and
the reported ones), applies Welch's t-test (and Mann-Whitney U) per hypothesis and writes ``OUT/results.json``,
``OUT/figures/*.png`` and, with ``--doc``, the results table as markdown.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DISTRACTOR = "0.6,0,1,1"
CONDITIONS: dict[str, dict[str, Any]] = {
    "none": {},
    "distractor": {"distractor": DISTRACTOR},
    "distractor_unreachable": {"distractor": DISTRACTOR, "unreachable_share": 0.33, "unreachable_views": "height"},
}
ARMS: dict[str, dict[str, Any]] = {
    "lp": {"goals": "som", "interest": "lp"},
    "slope": {"goals": "som", "interest": "slope"},
    "random_goal": {"goals": "som", "interest": "random"},
    "babbling": {"goals": "random", "interest": "random"},
}
CELLS = [("none", "lp"), ("none", "random_goal"), ("none", "babbling"),
         ("distractor", "lp"), ("distractor", "slope"), ("distractor", "random_goal"), ("distractor", "babbling"),
         ("distractor_unreachable", "lp"), ("distractor_unreachable", "slope"),
         ("distractor_unreachable", "random_goal")]
FILL = 320  # memory size: the first FILL iterations are random commands


def run(out: Path, steps: int, seeds: int, workers: int) -> int:
    from robot.compare import run_configs

    runs = [(f"{cond}/{arm}/seed{s}", {**CONDITIONS[cond], **ARMS[arm], "steps": steps, "log_every": 10, "seed": s,
                                      "threads": 1, "plots": False, "export": False, "checkpoint_every": 250},
             out / "runs" / cond / arm / f"seed{s}") for cond, arm in CELLS for s in range(seeds)]
    errors = run_configs(runs, workers)
    for e in errors:
        print(e, file=sys.stderr)
    return 1 if errors else 0


def _measures(metrics: Path) -> dict[str, float]:
    import csv

    with open(metrics, newline="") as f:
        rows = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]
    it = np.array([r["iteration"] for r in rows])
    col = {k: np.array([r[k] for r in rows]) for k in rows[0]}
    last = int(it[-1])
    d_fill = float(col["distractor_moves"][it == FILL][0]) if np.any(it == FILL) else 0.0
    m1 = (col["distractor_moves"][-1] * last - d_fill * FILL) / max(last - FILL, 1)

    def tavg(y: np.ndarray) -> float:
        return float(np.trapezoid(y, it) / (it[-1] - it[0]))

    return {"M1_distractor_share": float(m1), "M2_fwd_learn_auc": tavg(col["fwd_mse_learn"]),
            "M3_unreachable_share": float(col["unreachable_choices"][-1]),
            "inv_learn_auc": tavg(col["inv_mse_learn"]), "coverage_learn": float(col["coverage_learn"][-1]),
            "fwd_mse_final": float(col["fwd_mse"][-1]), "area_final": float(col["area"][-1])}


def _test(a: list[float], b: list[float]) -> dict[str, float]:
    from scipy.stats import mannwhitneyu, ttest_ind

    t = ttest_ind(a, b, equal_var=False)
    u = mannwhitneyu(a, b, alternative="two-sided")
    return {"mean_a": float(np.mean(a)), "mean_b": float(np.mean(b)), "ratio": float(np.mean(a) / np.mean(b)),
            "welch_p": float(t.pvalue), "mwu_p": float(u.pvalue)}


HYPOTHESES = [  # (name, condition, measure, criterion on mean(arm) / mean(random_goal))
    ("H1", "distractor", "M1_distractor_share", 0.5),
    ("H2", "distractor", "M2_fwd_learn_auc", 0.85),
    ("H3", "distractor_unreachable", "M3_unreachable_share", 1.0),
]


def analyse(out: Path, doc: Path | None) -> dict[str, Any]:
    from microfarm_toolkit import atomic_write_json, atomic_write_text

    runs: dict[str, dict[str, list[dict[str, float]]]] = {}
    for cond, arm in CELLS:
        for d in sorted((out / "runs" / cond / arm).glob("seed*")):
            if (d / "summary.json").is_file():
                runs.setdefault(cond, {}).setdefault(arm, []).append(_measures(d / "metrics.csv"))
    table = {c: {a: {k: (float(np.mean([r[k] for r in rs])), float(np.std([r[k] for r in rs])), len(rs))
                     for k in rs[0]} for a, rs in arms.items()} for c, arms in runs.items()}
    tests = []
    for name, cond, key, crit in HYPOTHESES:
        for arm in ("lp", "slope"):
            a = [r[key] for r in runs.get(cond, {}).get(arm, [])]
            b = [r[key] for r in runs.get(cond, {}).get("random_goal", [])]
            if len(a) >= 2 and len(b) >= 2:
                t = _test(a, b)
                held = t["ratio"] <= crit and t["welch_p"] < 0.05 if crit < 1 else (
                    t["ratio"] < 1 and t["welch_p"] < 0.05)
                tests.append({"hypothesis": name, "arm": arm, "condition": cond, "measure": key,
                              "criterion": crit, **t, "held": bool(held)})
    result = {"table": table, "tests": tests}
    atomic_write_json(out / "results.json", result)
    _figures(out, runs)
    if doc is not None:
        atomic_write_text(doc, _markdown(table, tests))
    return result


def _figures(out: Path, runs: dict[str, dict[str, list[dict[str, float]]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from microfarm_toolkit import atomic_path

    keys = [("M1_distractor_share", "moves into the distractor (321-1000)"),
            ("M2_fwd_learn_auc", "forward MSE AUC, learnable part"),
            ("M3_unreachable_share", "goal choices to unreachable goals"), ("coverage_learn", "learnable coverage")]
    fig, axs = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.8))
    colours = {"lp": "C0", "slope": "C1", "random_goal": "C2", "babbling": "C3"}
    for ax, (k, title) in zip(axs, keys, strict=True):
        for ci, cond in enumerate(CONDITIONS):
            for ai, arm in enumerate(ARMS):
                vals = [r[k] for r in runs.get(cond, {}).get(arm, []) if np.isfinite(r[k])]
                if not vals:
                    continue
                x = ci + (ai - 1.5) * 0.18
                ax.scatter([x] * len(vals), vals, s=12, color=colours[arm], alpha=0.6)
                ax.errorbar(x, np.mean(vals), yerr=np.std(vals), fmt="_", ms=14, color=colours[arm],
                            label=arm if ci == 1 else None)
        ax.set_xticks(range(len(CONDITIONS)), [c.replace("_", "\n") for c in CONDITIONS], fontsize=8)
        ax.set_title(title, fontsize=9)
    axs[0].legend(fontsize=7)
    folder = out / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "measures.png") as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight", format="png")
    plt.close(fig)


def _markdown(table: dict[str, Any], tests: list[dict[str, Any]]) -> str:
    keys = ["M1_distractor_share", "M2_fwd_learn_auc", "M3_unreachable_share", "inv_learn_auc", "coverage_learn",
            "fwd_mse_final", "area_final"]
    lines = ["| condition | arm | n | " + " | ".join(keys) + " |", "|---|---|---|" + "---|" * len(keys)]
    for cond, arms in table.items():
        for arm, st in arms.items():
            cells = [f"{st[k][0]:.4g} ± {st[k][1]:.2g}" for k in keys]
            lines.append(f"| {cond} | {arm} | {st[keys[0]][2]} | " + " | ".join(cells) + " |")
    lines += ["", "| hypothesis | arm | condition | measure | mean arm | mean random_goal | ratio | criterion | "
              "Welch p | MWU p | held |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for t in tests:
        lines.append(f"| {t['hypothesis']} | {t['arm']} | {t['condition']} | {t['measure']} | {t['mean_a']:.4g} | "
                     f"{t['mean_b']:.4g} | {t['ratio']:.3f} | {t['criterion']} | {t['welch_p']:.3g} | "
                     f"{t['mwu_p']:.3g} | {'yes' if t['held'] else 'no'} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("what", choices=("run", "analyse"))
    ap.add_argument("--out", type=Path, default=Path("runs/curiosity"))
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--doc", type=Path, default=None, help="write the results tables (markdown) here")
    args = ap.parse_args()
    if args.what == "run":
        return run(args.out, args.steps, args.seeds, args.workers)
    res = analyse(args.out, args.doc)
    for t in res["tests"]:
        print(f"{t['hypothesis']} {t['arm']}: ratio {t['ratio']:.3f} (criterion {t['criterion']}), "
              f"Welch p {t['welch_p']:.3g}, held: {t['held']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
