"""End of an exploration run: plots (PNG), summary.json, weights and the ONNX ``export/`` bundle.

Plots: ``mse.png`` (forward / inverse test MSE over iterations, on the learnable part too when a distractor
is set; and the forward test MSE per quadrant of the motor square, with the forgetting of left regions when a
region was left), ``interest.png`` (each
goal's interest over iterations), ``explored.png`` (explored positions over the bed, coloured by iteration,
test positions as crosses), ``goals.png`` (the goal codes decoded to images by the autoencoder).
"""

from __future__ import annotations

import dataclasses
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch

from microfarm_toolkit import atomic_path, atomic_write_json
from models.autoencoder import PREPROCESS_SCALE, ConvAutoencoder
from models.onnx_export import export_onnx, write_manifest
from models.weights import save_weights

__all__ = ["plot_run", "write_summary", "export_bundle", "finish_run", "auc"]


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight", format="png")
    _plt().close(fig)


def _col(rows: list[dict[str, float]], key: str) -> np.ndarray:
    return np.array([r[key] for r in rows], dtype=float)


def plot_run(folder: Path, rows: list[dict[str, float]], positions: np.ndarray, test_motor: np.ndarray,
             goal_images: np.ndarray | None, n_goals: int,
             distractor: tuple[float, float, float, float] | None = None,
             unreachable: np.ndarray | None = None) -> list[Path]:
    """Write the run's PNGs into ``folder`` (created); returns their paths. ``distractor``: a box (x0, y0, x1, y1)
    in motor coordinates to shade on ``explored.png`` (the gantry's motors are bed fractions). ``unreachable``:
    (n_goals,) bool, goals built from views the camera cannot reach (dashed and labelled on ``interest.png``)."""
    plt, folder = _plt(), Path(folder)
    it, out = _col(rows, "iteration"), []
    fig, ax = plt.subplots(1, 2, figsize=(12.5, 3.8))
    fig.subplots_adjust(wspace=0.3)
    ax[0].plot(it, _col(rows, "fwd_mse"), color="C0", label="forward (code)")
    ax[0].plot(it, _col(rows, "inv_mse"), color="C1", label="inverse (motor)")
    if rows and "fwd_mse_learn" in rows[0] and not np.allclose(_col(rows, "fwd_mse_learn"), _col(rows, "fwd_mse"),
                                                               equal_nan=True):
        ax[0].plot(it, _col(rows, "fwd_mse_learn"), color="C0", ls="--", label="forward, learnable part")
        ax[0].plot(it, _col(rows, "inv_mse_learn"), color="C1", ls="--", label="inverse, learnable part")
    ax[0].set(xlabel="iteration", ylabel="test MSE", yscale="log", title="test error")
    ax[0].legend(fontsize=8)
    for r in range(4):
        if rows and f"fwd_mse_r{r}" in rows[0]:
            ax[1].plot(it, _col(rows, f"fwd_mse_r{r}"), lw=1, label=f"quadrant {r}")
    forgetting = _col(rows, "forgetting") if rows else np.zeros(0)
    if np.any(forgetting != 0):
        ax[1].plot(it, forgetting, color="k", lw=1.2, label="forgetting (left regions)")
    ax[1].set(xlabel="iteration", ylabel="forward test MSE", yscale="symlog" if np.any(forgetting < 0) else "log",
              title="forward error per quadrant (motor axes 0/1 split at 0.5)")
    ax[1].legend(fontsize=7, ncol=2)
    _save(fig, folder / "mse.png")
    out.append(folder / "mse.png")
    fig, ax = plt.subplots(figsize=(8, 3.6))
    for g in range(n_goals):
        far = unreachable is not None and bool(unreachable[g])
        ax.plot(it, _col(rows, f"lp_{g}"), lw=0.8, ls="--" if far else "-",
                label=f"goal {g} (unreachable)" if far else f"goal {g}")
    ax.set(xlabel="iteration", ylabel="interest", title="interest per goal")
    ax.legend(ncol=3, fontsize=7)
    _save(fig, folder / "interest.png")
    out.append(folder / "interest.png")
    fig, ax = plt.subplots(figsize=(5, 5))
    y = positions[:, 1] if positions.shape[1] > 1 else np.zeros(len(positions))
    sc = ax.scatter(positions[:, 0], y, c=np.arange(len(positions)), s=3, cmap="viridis")
    ax.scatter(test_motor[:, 0], test_motor[:, 1] if test_motor.shape[1] > 1 else 0 * test_motor[:, 0],
               marker="x", c="red", s=12, label="test positions")
    if distractor is not None:
        x0, y0, x1, y1 = distractor
        ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, color="orange", alpha=0.2, label="distractor"))
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="motor 0", ylabel="motor 1", title="explored positions")
    ax.legend(loc="upper right", fontsize=7)
    fig.colorbar(sc, ax=ax, label="sample")
    _save(fig, folder / "explored.png")
    out.append(folder / "explored.png")
    if goal_images is not None and len(goal_images):
        n = len(goal_images)
        cols = int(np.ceil(np.sqrt(n)))
        rws = int(np.ceil(n / cols))
        fig, axs = plt.subplots(rws, cols, figsize=(1.6 * cols, 1.6 * rws), squeeze=False)
        for i, a in enumerate(axs.flat):
            a.axis("off")
            if i < n:
                img = goal_images[i]
                a.imshow(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0), cmap="gray", vmin=0, vmax=1)
                a.set_title(f"goal {i}", fontsize=8)
        _save(fig, folder / "goals.png")
        out.append(folder / "goals.png")
    return out


def auc(rows: list[dict[str, float]], key: str) -> float:
    """Area under the curve of ``key`` over iterations, divided by the iteration span (= time-average)."""
    x, y = _col(rows, "iteration"), _col(rows, key)
    if len(x) < 2:
        return float(y[-1]) if len(y) else float("nan")
    return float(np.trapezoid(y, x) / (x[-1] - x[0]))


def write_summary(out: Path, cfg: Any, rows: list[dict[str, float]], wall: float, extra: dict[str, Any]) -> None:
    last = rows[-1] if rows else {}
    goals = _col(rows, "goal").astype(int) if rows else np.zeros(0, int)
    forg = _col(rows, "forgetting") if rows else np.zeros(0)
    summary = {"config": dataclasses.asdict(cfg), "seed": cfg.seed, "iterations": int(last.get("iteration", 0)),
               "final": {k: last.get(k) for k in ("fwd_mse", "inv_mse", "area", "forgetting")},
               "auc": {k: auc(rows, k) for k in ("fwd_mse", "inv_mse")} if rows else {},
               "forgetting": {"mean": float(forg.mean()) if len(forg) else 0.0,
                              "max": float(forg.max()) if len(forg) else 0.0},
               "goal_counts": np.bincount(goals, minlength=cfg.n_goals).tolist(),
               "random_command_fraction": float(_col(rows, "random_cmd").mean()) if rows else 0.0,
               "wall_time_s": round(wall, 3), "iterations_per_s": round(cfg.steps / max(wall, 1e-9), 2),
               "torch_threads": torch.get_num_threads(), "python": platform.python_version(), **extra}
    atomic_write_json(out / "summary.json", summary)


def export_bundle(folder: Path, ae: ConvAutoencoder, fwd: torch.nn.Module, inv: torch.nn.Module,
                  motor: dict[str, Any], version: str = "1") -> Path:
    """``folder/{encoder,forward,inverse}.onnx`` + ``manifest.json`` (preprocess and motor contract)."""
    folder = Path(folder)
    c, D, C = ae.cfg, fwd.layers[0].in_features, ae.cfg.code_size
    pre = {"color": c.color, "gray_conversion": "cv2.COLOR_RGB2GRAY" if c.color == "gray" else None,
           "size": c.size, "resize": "cv2.INTER_AREA", "scale": PREPROCESS_SCALE, "mean": 0.0, "std": 1.0,
           "layout": "NCHW", "input": "RGB uint8 (H, W, 3)"}
    common = {"version": version, "motor": motor}
    entries = {
        "encoder": export_onnx(ae.encoder, [torch.rand(2, c.in_channels, c.size, c.size)], folder / "encoder.onnx",
                               ["image"], ["code"], metadata={**common, "preprocess": pre, "config": c.to_dict()}),
        "forward": export_onnx(fwd, [torch.rand(2, D)], folder / "forward.onnx", ["motor"], ["code"],
                               metadata={**common, "config": fwd.cfg.to_dict()}),
        "inverse": export_onnx(inv, [torch.randn(2, C)], folder / "inverse.onnx", ["code"], ["motor"],
                               metadata={**common, "config": inv.cfg.to_dict()}),
    }
    entries["encoder"]["preprocess"] = pre
    return write_manifest(folder, entries, version=version, motor=motor)


def finish_run(out: Path, cfg: Any, robot: Any, ae: ConvAutoencoder, models: Any, st: dict[str, Any],
               tracker: Any, wall: float) -> None:
    """Weights, plots, export bundle and summary.json of a finished run."""
    fwd, inv = models.to_modules()
    for name, m in (("forward", fwd), ("inverse", inv)):
        save_weights(out / "weights" / f"{name}.safetensors", m, m.cfg.to_dict(), kind=f"{name}_mlp")
    save_weights(out / "weights" / "autoencoder.safetensors", ae, ae.cfg.to_dict(), kind="autoencoder")
    if cfg.plots:
        with torch.no_grad():
            imgs = ae.decode(torch.as_tensor(st["goals"])).numpy()
        box = None
        if getattr(cfg, "distractor", "") and cfg.arm == "gantry":
            from robot.sim_robot import parse_distractor

            box = parse_distractor(cfg.distractor)
        plot_run(out / "plots", tracker.rows, tracker.positions, st["test_motor"], imgs, cfg.n_goals, box,
                 st.get("goal_unreachable"))
    extra: dict[str, Any] = {"init": {"seed": int(st.get("init_seed", cfg.seed)),
                                      "candidates": list(st.get("init_candidates", []))}}
    if cfg.export:
        motor = {"env_id": getattr(robot, "env_id", None), "env_kwargs": getattr(robot, "env_kwargs", {}),
                 "robot": getattr(robot, "name", type(robot).__name__),
                 "low": robot.action_low.tolist(), "high": robot.action_high.tolist(), "dim": robot.action_dim}
        extra["export"] = str(export_bundle(out / "export", ae, fwd, inv, motor))
    write_summary(out, cfg, tracker.rows, wall, extra)
