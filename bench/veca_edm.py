"""VECA and EDM on the segmenter (docs/science.md sections 1 and 2): short `train-segmenter` runs, then a report.

    python bench/veca_edm.py run --data data/seg_small --out runs/science_veca --seeds 0 1 2 3 4 --steps 3000 \
        --edm-weight 1
    python bench/veca_edm.py report --out runs/science_veca --figure docs/science_veca.png
    python bench/veca_edm.py penalties --out runs/science_veca

``run`` trains, per seed, one run without EDM (``edm0``) and one with ``--edm-weight W`` (``edmW``), with the same
flags otherwise (``--jobs`` at a time, one torch thread each). Every run logs, every ``--every`` steps, the held-out
fold's 1-shot mIoU and loss (``val_*``, ``--val-episodes`` episodes) and VECA of the encoder levels and the head's
hidden layer on a fixed batch of training episodes. ``report`` reads the logs: per checkpoint VECA and test error,
Spearman's rho of each VECA column with the test error (1 - mIoU, and the loss) over all checkpoints of the runs
without EDM, within each run, and of the step itself (the baseline: is VECA more than a clock?); the final and best
held-out mIoU with and without EDM; and a figure.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

FLAGS = ["--imgsz", "64", "--batch", "8", "--shots", "3", "--threads", "1", "--workers", "0",
         "--no-progress", "--save-every", "100000"]


def run(args: argparse.Namespace) -> None:
    """The trainings: seeds x (no EDM, EDM)."""
    jobs = []
    for seed in args.seeds:
        for w in [0.0] + ([args.edm_weight] if args.edm_weight > 0 else []):
            out = Path(args.out) / f"seed{seed}_edm{w:g}"
            if (out / "summary.json").is_file():
                continue
            jobs.append([sys.executable, "-m", "microfarm", "train-segmenter", "--data", str(args.data), "--out",
                         str(out), "--seed", str(seed), "--steps", str(args.steps), "--val-every", str(args.every),
                         "--veca-every", str(args.every), "--val-episodes", str(args.val_episodes),
                         "--edm-weight", f"{w:g}", "--edm-groups", str(args.edm_groups), "--augment", args.augment,
                         *FLAGS])

    def one(cmd: list[str]) -> None:
        print(" ".join(cmd[2:]), flush=True)
        subprocess.run(cmd, check=True)

    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(one, jobs))


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "log.csv").open(newline="") as f:
        return [r for r in csv.DictReader(f) if r.get("val_miou") and r.get("veca_mid")]


def _runs(out: Path) -> dict[tuple[int, float], list[dict[str, str]]]:
    runs = {}
    for d in sorted(out.glob("seed*_edm*")):
        if (d / "summary.json").is_file():
            seed, w = d.name[4:].split("_edm")
            runs[(int(seed), float(w))] = _rows(d)
    return runs


def _correlations(base: dict[int, list[dict[str, str]]], cols: list[str], min_step: int) -> dict[str, dict]:
    """Spearman's rho of each column (and of the step) with the test error and loss over the checkpoints from
    ``min_step`` on: pooled over the seeds, and within each run; printed as a markdown table."""
    from scipy.stats import spearmanr

    sel = {s: [r for r in rows if int(r["step"]) >= min_step] for s, rows in base.items()}
    n = sum(len(rows) for rows in sel.values())
    print(f"\ncheckpoints from step {min_step}: {n} ({len(sel)} runs)\n")
    print("| predictor | pooled rho vs test error (p) | pooled rho vs test loss (p) | within-run rho vs error, "
          "per seed | within-run rho vs loss, per seed |")
    print("| --- | --- | --- | --- | --- |")
    out = {}
    for c in [*cols, "step"]:
        x = [float(r[c]) for rows in sel.values() for r in rows]
        err = [1 - float(r["val_miou"]) for rows in sel.values() for r in rows]
        loss = [float(r["val_loss"]) for rows in sel.values() for r in rows]
        re_, pe = spearmanr(x, err)
        rl, pl = spearmanr(x, loss)
        we = [float(spearmanr([float(r[c]) for r in rows], [1 - float(r["val_miou"]) for r in rows])[0])
              for _, rows in sorted(sel.items())]
        wl = [float(spearmanr([float(r[c]) for r in rows], [float(r["val_loss"]) for r in rows])[0])
              for _, rows in sorted(sel.items())]
        out[c] = {"err": [float(re_), float(pe)], "loss": [float(rl), float(pl)], "within_err": we, "within_loss": wl}
        print(f"| {c} | {re_:+.2f} ({pe:.2g}) | {rl:+.2f} ({pl:.2g}) | " + ", ".join(f"{v:+.2f}" for v in we)
              + " | " + ", ".join(f"{v:+.2f}" for v in wl) + " |")
    return out


def _edm_table(base: dict[int, list[dict[str, str]]], runs: dict) -> dict[str, dict]:
    """Per EDM weight and seed: held-out mIoU (final, mean of the last 5 checkpoints, best) and test loss (final,
    lowest), without and with EDM; the paired differences (mean, std, seeds better, paired t-test p)."""
    from scipy.stats import ttest_rel

    def stats(rows: list[dict[str, str]]) -> list[float]:
        m = [float(r["val_miou"]) for r in rows]
        lo = [float(r["val_loss"]) for r in rows]
        return [m[-1], float(np.mean(m[-5:])), max(m), lo[-1], min(lo)]

    names = ["final mIoU", "last-5 mIoU", "best mIoU", "final test loss", "lowest test loss"]
    out = {}
    for w in sorted({w for (_, w) in runs if w > 0}):
        seeds = [s for s in sorted(base) if (s, w) in runs]
        a = np.array([stats(base[s]) for s in seeds])
        b = np.array([stats(runs[(s, w)]) for s in seeds])
        print(f"\nEDM weight {w:g} (no EDM / EDM)\n")
        print("| seed | " + " | ".join(names) + " |")
        print("| --- " * (len(names) + 1) + "|")
        for i, s in enumerate(seeds):
            print(f"| {s} | " + " | ".join(f"{a[i, j]:.3f} / {b[i, j]:.3f}" for j in range(len(names))) + " |")
        d = b - a
        sd = d.std(0, ddof=1) if len(seeds) > 1 else np.zeros(len(names))
        p = [float(ttest_rel(b[:, j], a[:, j]).pvalue) if len(seeds) > 1 else float("nan") for j in range(len(names))]
        print("| EDM - no EDM: mean ± std (seeds higher; paired t p) | " + " | ".join(
            f"{d[:, j].mean():+.3f} ± {sd[j]:.3f} ({int((d[:, j] > 0).sum())}/{len(seeds)}; {p[j]:.2g})"
            for j in range(len(names))) + " |")
        out[f"{w:g}"] = {"seeds": seeds, "names": names, "no_edm": a.tolist(), "edm": b.tolist(), "p": p}
    return out


def report(args: argparse.Namespace) -> None:
    """Tables (markdown, to stdout), Spearman's rho and the figure."""
    runs = _runs(Path(args.out))
    base = {s: rows for (s, w), rows in runs.items() if w == 0}
    cols = [c for c in ("veca_mid", "veca_high", "veca_head", "nveca_mid", "nveca_high", "nveca_head")
            if all(r.get(c) for rows in base.values() for r in rows)]
    print("| seed | step | " + " | ".join(cols) + " | test mIoU | test error | test loss |")
    print("| --- " * (len(cols) + 5) + "|")
    for s, rows in sorted(base.items()):
        for r in rows:
            m = float(r["val_miou"])
            if int(r["step"]) % args.table_every == 0:
                print(f"| {s} | {r['step']} | " + " | ".join(f"{float(r[c]):.4g}" for c in cols)
                      + f" | {m:.3f} | {1 - m:.3f} | {float(r['val_loss']):.3f} |")
    if args.csv:
        fields = ["seed", "edm_weight", "step", "val_miou", "val_loss", *cols]
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
            w.writeheader()
            for (s, ew), rows in sorted(runs.items()):
                w.writerows({**r, "seed": s, "edm_weight": ew} for r in rows)
    result = {f"from_step_{m}": _correlations(base, cols, m) for m in (0, args.late)}
    print("\nevery run, with and without EDM (keys seed/weight):")
    result["all_runs"] = _correlations({f"{s}/{w:g}": rows for (s, w), rows in sorted(runs.items())}, cols, 0)
    result["edm"] = _edm_table(base, runs)
    Path(args.out, "report.json").write_text(json.dumps(result, indent=1))
    if args.figure:
        _figure(Path(args.figure), base, runs, cols)


def _figure(path: Path, base: dict, runs: dict, cols: list[str]) -> None:
    """2x2: test loss and VECA against the step (runs without EDM), VECA against test loss, mIoU with/without EDM."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10.5, 7.6))
    ax = axes[0, 0]
    for s, rows in sorted(base.items()):
        st = [int(r["step"]) for r in rows]
        ax.plot(st, [float(r["val_loss"]) for r in rows], color=f"C{s}", label=f"seed {s}")
        ax.plot(st, [1 - float(r["val_miou"]) for r in rows], color=f"C{s}", ls=":", alpha=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("held-out fold: loss (solid), 1 - mIoU (dotted)")
    ax.set_title("(a) test loss and error, no EDM")
    ax.legend(fontsize=7)
    ax = axes[0, 1]
    for c, ls in (("nveca_mid", "-"), ("nveca_head", "--"), ("veca_head", ":")):
        if c not in cols:
            continue
        for s, rows in sorted(base.items()):
            ax.plot([int(r["step"]) for r in rows], [float(r[c]) for r in rows], color=f"C{s}", ls=ls,
                    label=c if s == min(base) else None)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("VECA on fixed training episodes")
    ax.set_title("(b) VECA, no EDM (colour = seed)")
    ax.legend(fontsize=7)
    ax = axes[1, 0]
    c = "nveca_mid" if "nveca_mid" in cols else cols[0]
    x = [float(r[c]) for rows in base.values() for r in rows]
    y = [float(r["val_loss"]) for rows in base.values() for r in rows]
    st = [int(r["step"]) for rows in base.values() for r in rows]
    sc = ax.scatter(x, y, c=st, s=14, cmap="viridis")
    fig.colorbar(sc, ax=ax, label="step")
    ax.set_xscale("log")
    ax.set_xlabel(f"{c} (mean-normalised VECA, encoder mid level)")
    ax.set_ylabel("held-out loss")
    ax.set_title(f"(c) {c} vs test loss, every checkpoint")
    ax = axes[1, 1]
    for (s, w), rows in sorted(runs.items()):
        ax.plot([int(r["step"]) for r in rows], [float(r["val_miou"]) for r in rows], color=f"C{s}",
                ls="-" if w == 0 else "--", alpha=0.8, label=f"EDM weight {w:g}" if s == min(base) else None)
    ax.set_xlabel("step")
    ax.set_ylabel("held-out 1-shot mIoU")
    ax.set_title("(d) mIoU without (solid) and with EDM (dashed)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def penalties(args: argparse.Namespace) -> None:
    """The EDM penalty (``--edm-groups`` groups, per tap and their mean) of every run's final weights on its VECA
    batch (eval mode): did EDM decorrelate the groups, and how far apart are runs without it?"""
    import torch

    from models.guided_net import load_guided_net
    from models.veca import LayerTaps, edm_penalty, guided_net_layers
    from vision.episodes import SegmentationDataset
    from vision.train_config import TrainConfig
    from vision.train_data import veca_batch

    print("| run | " + " | ".join(("mid", "high", "head", "mean")) + " |\n| --- | --- | --- | --- | --- |")
    for d in sorted(Path(args.out).glob("seed*_edm*")):
        if not (d / "summary.json").is_file():
            continue
        cfg = TrainConfig(**{k: v for k, v in json.loads((d / "config.json").read_text()).items()
                             if k in TrainConfig.__dataclass_fields__})
        ds = SegmentationDataset(cfg.data)
        batch = veca_batch(ds, [f for f in range(len(ds.folds)) if f != cfg.fold], cfg)
        model, _ = load_guided_net(d / "weights.safetensors")
        with LayerTaps(guided_net_layers(model)) as taps, torch.no_grad():
            model(*batch)
            pen = {k: float(edm_penalty(v, args.edm_groups)) for k, v in taps.outputs.items()}
        print(f"| {d.name} | " + " | ".join(f"{pen[k]:.4f}" for k in ("mid", "high", "head"))
              + f" | {np.mean(list(pen.values())):.4f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--data", type=Path, required=True)
    r.add_argument("--out", type=Path, default=Path("runs/science_veca"))
    r.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    r.add_argument("--steps", type=int, default=3000)
    r.add_argument("--every", type=int, default=100)
    r.add_argument("--val-episodes", type=int, default=200)
    r.add_argument("--edm-weight", type=float, default=1.0)
    r.add_argument("--edm-groups", type=int, default=4)
    r.add_argument("--augment", default="none", help="train-segmenter --augment (none: the small set overfits)")
    r.add_argument("--jobs", type=int, default=1)
    q = sub.add_parser("report")
    q.add_argument("--out", type=Path, default=Path("runs/science_veca"))
    q.add_argument("--figure", type=Path, default=None)
    q.add_argument("--table-every", type=int, default=500, help="print the checkpoints at multiples of this step")
    q.add_argument("--csv", type=Path, default=None, help="every checkpoint of every run, as CSV")
    q.add_argument("--late", type=int, default=1000, help="a second table over the checkpoints from this step")
    e = sub.add_parser("penalties")
    e.add_argument("--out", type=Path, default=Path("runs/science_veca"))
    e.add_argument("--edm-groups", type=int, default=4)
    args = p.parse_args()
    {"run": run, "report": report, "penalties": penalties}[args.cmd](args)


if __name__ == "__main__":
    main()
