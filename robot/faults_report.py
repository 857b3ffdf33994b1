"""The report of `microfarm faults` (``robot.faults_cli``): the table across seeds, its CSV, the robustness figure."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["summarise", "table_csv", "plot_robustness"]

TITLES = {"miou": ("segmentation mIoU (%)", "higher is better", "miou_all_foreground", "every pixel marked"),
          "reach_error": ("reach error (normalised motor units)", "lower is better", "reach_error_random_command",
                          "random commands")}


def summarise(draws: list[dict[str, Any]], metrics: list[str]) -> list[dict[str, Any]]:
    """Per mode and rate (in the draws' order): ``stuck_weights`` (all faulted models together), ``n`` seeds, and
    ``<metric>_mean`` / ``<metric>_std`` (population std, ddof 0) of each metric across seeds."""
    rows = []
    for mode in dict.fromkeys(d["mode"] for d in draws):
        for rate in dict.fromkeys(d["rate"] for d in draws if d["mode"] == mode):
            ds = [d for d in draws if d["mode"] == mode and d["rate"] == rate]
            row = {"mode": mode, "rate": rate, "n": len(ds), "stuck_weights": sum(ds[0]["faulted"].values())}
            for k in metrics:
                v = np.array([d[k] for d in ds])
                row.update({f"{k}_mean": float(v.mean()), f"{k}_std": float(v.std())})
            rows.append(row)
    return rows


def table_csv(table: list[dict[str, Any]], base: dict[str, float]) -> str:
    """``faults.csv``: mode, rate, stuck_weights, n, each metric's mean and std; first row the fault-free bundle."""
    keys = [f"{k}_{s}" for k in base for s in ("mean", "std")]
    lines = [",".join(["mode", "rate", "stuck_weights", "n", *keys])]
    lines.append(",".join(["none", "0", "0", "1", *(f"{base[k]:.6g},0" for k in base)]))
    lines += [",".join([r["mode"], f"{r['rate']:g}", str(r["stuck_weights"]), str(r["n"]),
                        *(f"{r[k]:.6g}" for k in keys)]) for r in table]
    return "\n".join(lines) + "\n"


def plot_robustness(table: list[dict[str, Any]], base: dict[str, float], weights: dict[str, int],
                    refs: dict[str, float]) -> np.ndarray:
    """The robustness figure as an RGB uint8 image (H,W,3): one panel per metric, mean across seeds against the rate
    (log axis, percent) per mode with a +-1 std band, the fault-free value dashed and the reference dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    fig, axes = plt.subplots(1, len(base), figsize=(5.6 * len(base), 4.6), squeeze=False, layout="constrained")
    rates = sorted({r["rate"] for r in table})
    for ax, k in zip(axes[0], base, strict=True):
        label, better, ref, ref_label = TITLES[k]
        for mode in dict.fromkeys(r["mode"] for r in table):
            rs = sorted((r for r in table if r["mode"] == mode), key=lambda r: r["rate"])
            x = np.array([r["rate"] for r in rs]) * 100
            m, s = np.array([r[f"{k}_mean"] for r in rs]), np.array([r[f"{k}_std"] for r in rs])
            ax.plot(x, m, "o-", label=f"stuck {mode}")
            ax.fill_between(x, m - s, m + s, alpha=0.2)
        ax.axhline(base[k], color="k", ls="--", lw=1, label=f"fault-free ({base[k]:.3g})")
        if ref in refs:
            ax.axhline(refs[ref], color="grey", ls=":", lw=1.2, label=f"{ref_label} ({refs[ref]:.3g})")
        ax.set(xscale="log", xlabel="stuck weights (% of each model's)", ylabel=label,
               title=f"{label.split(' (')[0]} ({better})")
        ax.set_xticks([r * 100 for r in rates])
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, frameon=False)
    fig.suptitle(f"stuck-at faults: mean \u00b1 std over {table[0]['n']} draws per point; "
                 f"{sum(weights.values()):,} weights in {', '.join(weights)}", fontsize=9)
    fig.canvas.draw()
    img = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return img
