"""Bookkeeping of an exploration run: metrics tracker (CSV, hull area, forgetting) and checkpoints.

A checkpoint is one safetensors file, ``checkpoint/state.safetensors``, replaced atomically: every array of
the (nested) state is a tensor named by its path ("models/p0", "memory/code", ...); everything else
(iteration, RNG states, config) is JSON in the file's metadata. Nothing is unpickled on load.
"""

from __future__ import annotations

import csv
import json
import signal
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from scipy.spatial import ConvexHull, QhullError

from microfarm_toolkit import UsageError, atomic_path

__all__ = ["Tracker", "save_checkpoint", "load_checkpoint", "region_of", "N_REGIONS", "Interrupt"]

N_REGIONS = 4
# iterations before --leave-at whose logged errors of the region to be left are averaged into the baseline
LEAVE_BASELINE = 100
_ARRAY = "__array__"


def leave_region_command(cmd: np.ndarray, region: int, margin: float = 1e-3) -> np.ndarray:
    """``cmd`` (D,) normalised, moved to the nearest point outside quadrant ``region`` (unchanged if outside).

    The quadrant is a box of the first two axes split at 0.5 (see ``region_of``); the nearest outside point
    moves the one coordinate that is closest to the split onto the split (+- ``margin`` to the outside).
    """
    out = np.array(cmd, np.float32, copy=True)
    if region < 0 or region_of(out)[0] != region:
        return out
    axes = [0, 1] if len(out) > 1 else [0]
    gaps = [abs(float(out[a]) - 0.5) for a in axes]
    a = axes[int(np.argmin(gaps))]
    high = (region >> a) & 1  # the region is on the high side of axis a: leave downwards
    out[a] = 0.5 - margin if high else 0.5 + margin
    return out


def region_of(motor: np.ndarray) -> np.ndarray:
    """Region index (N,) in 0..3 of positions (N, D): quadrants of the first two axes (x only when D = 1)."""
    m = np.atleast_2d(motor)
    r = (m[:, 0] >= 0.5).astype(np.int64)
    return r + 2 * (m[:, 1] >= 0.5) if m.shape[1] > 1 else r


# -- checkpoints --------------------------------------------------------------------------------------
def _split(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        return {k: _split(v, f"{prefix}{k}/", tensors) for k, v in obj.items()}
    if isinstance(obj, np.ndarray | torch.Tensor):
        tensors[prefix[:-1]] = torch.as_tensor(np.ascontiguousarray(obj) if isinstance(obj, np.ndarray) else obj
                                               ).detach().cpu().contiguous().clone()
        return _ARRAY
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _join(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        return {k: _join(v, f"{prefix}{k}/", tensors) for k, v in obj.items()}
    return tensors[prefix[:-1]].numpy() if obj == _ARRAY else obj


def save_checkpoint(folder: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (nested dicts of arrays / JSON values) to ``folder/state.safetensors`` atomically."""
    tensors: dict[str, torch.Tensor] = {}
    meta = _split(state, "", tensors)
    path = Path(folder) / "state.safetensors"
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"state": json.dumps(meta)})
    return path


def load_checkpoint(folder: Path) -> dict[str, Any]:
    """The state saved by ``save_checkpoint`` (arrays as numpy). ``folder``: the run or its checkpoint/."""
    folder = Path(folder)
    path = next((p for p in (folder / "checkpoint" / "state.safetensors", folder / "state.safetensors")
                 if p.is_file()), None)
    if path is None:
        raise UsageError(f"no checkpoint in {str(folder)!r} (expected checkpoint/state.safetensors); "
                         "pass the folder of an earlier run to --resume")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = json.loads((f.metadata() or {})["state"])
    return _join(meta, "", load_file(str(path)))


# -- metrics ------------------------------------------------------------------------------------------
class Tracker:
    """Explored positions, hull area, per-region forgetting and the metrics CSV (see robot.explore doc)."""

    def __init__(self, motor_dim: int, n_goals: int, test_motor: np.ndarray, forget_window: int,
                 leave_region: int = -1, leave_at: int = 0, extra_columns: tuple[str, ...] = ()) -> None:
        self.D, self.n_goals, self.window = motor_dim, n_goals, forget_window
        self.leave_region, self.leave_at = int(leave_region), int(leave_at)
        self._leave_base: list[float] = []  # the left region's errors logged in the window before leave_at
        self.test_region = region_of(test_motor)
        self.last_visit = np.full(N_REGIONS, -(10**9), np.int64)
        self.baseline = np.full(N_REGIONS, np.nan)
        self.positions = np.zeros((0, motor_dim), np.float32)
        self.hull_pts = np.zeros((0, motor_dim), np.float64)
        self.area = 0.0
        self.rows: list[dict[str, float]] = []
        self.columns = (["iteration", "fwd_mse", "inv_mse", "area", "goal", "random_cmd"]
                        + [f"lp_{g}" for g in range(n_goals)]
                        + ["fwd_loss", "inv_loss", "mem_size", "mem_seen", "mem_replaced", "mem_mean_age",
                           "mem_mean_lp", "forgetting", "regions_left"]
                        + [f"fwd_mse_r{r}" for r in range(N_REGIONS)] + list(extra_columns) + ["elapsed_s"])
        self._file: Any = None
        self._writer: Any = None

    def add_positions(self, motors: np.ndarray, t: int) -> None:
        self.positions = np.concatenate([self.positions, motors.astype(np.float32)])
        self.last_visit[np.unique(region_of(motors))] = t
        pts = np.concatenate([self.hull_pts, motors.astype(np.float64)])
        if len(pts) > self.D:
            try:
                hull = ConvexHull(pts)
                pts, self.area = pts[hull.vertices], float(hull.volume)
            except QhullError:  # degenerate (collinear) so far
                pass
        self.hull_pts = pts

    def log(self, t: int, errs: dict[str, Any], goal: int, random_cmd: bool, lp: np.ndarray,
            losses: tuple[float, float], mem: dict[str, float], elapsed: float,
            extra: dict[str, float] | None = None) -> dict[str, float]:
        per = errs["fwd_per_sample"]
        reg = np.array([per[self.test_region == r].mean() if np.any(self.test_region == r) else np.nan
                        for r in range(N_REGIONS)])
        left = (t - self.last_visit) >= self.window
        self.baseline[~left] = reg[~left]
        forg = reg[left] - self.baseline[left]
        forg = forg[np.isfinite(forg)]
        if self.leave_region >= 0:  # the probe: forgetting = the left region's error rise since leave_at
            r = self.leave_region
            if t <= self.leave_at:
                if t > self.leave_at - LEAVE_BASELINE:
                    self._leave_base.append(float(reg[r]))
                forg = np.zeros(0)
            else:
                base = float(np.nanmean(self._leave_base)) if self._leave_base else np.nan
                forg = np.array([reg[r] - base])
            left = np.arange(N_REGIONS) == r if t > self.leave_at else np.zeros(N_REGIONS, bool)
        row: dict[str, float] = {"iteration": t, "fwd_mse": errs["fwd_mse"], "inv_mse": errs["inv_mse"],
                                 "area": self.area, "goal": goal, "random_cmd": int(random_cmd)}
        row.update({f"lp_{g}": float(v) for g, v in enumerate(lp)})
        row.update({"fwd_loss": losses[0], "inv_loss": losses[1], **mem,
                    "forgetting": float(forg.mean()) if len(forg) else 0.0, "regions_left": int(left.sum())})
        row.update({f"fwd_mse_r{r}": float(v) for r, v in enumerate(reg)})
        row.update(extra or {})
        row["elapsed_s"] = round(elapsed, 3)
        self.rows.append(row)
        if self._writer is not None:
            self._writer.writerow(row)
            self._file.flush()
        return row

    def open_csv(self, path: Path, keep_until: int) -> None:
        """Open ``path`` for appending; rows of a resumed run after ``keep_until`` are dropped first."""
        rows: list[dict[str, str]] = []
        if path.is_file() and keep_until > 0:
            with open(path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(float(r["iteration"])) <= keep_until]
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.columns)
            w.writeheader()
            w.writerows(rows)
        # a column added since the checkpoint (e.g. veca_*) is empty in its older rows: NaN
        self.rows = [{k: float(v) if v not in ("", None) else float("nan") for k, v in r.items()} for r in rows]
        self._file = open(path, "a", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=self.columns)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = self._writer = None

    def state_dict(self) -> dict[str, Any]:
        return {"last_visit": self.last_visit.copy(), "baseline": self.baseline.copy(),
                "leave_base": np.asarray(self._leave_base, np.float64),
                "positions": self.positions.copy(), "hull_pts": self.hull_pts.copy(), "area": self.area}

    def load_state_dict(self, s: dict[str, Any]) -> None:
        self.last_visit, self.baseline = np.array(s["last_visit"]), np.array(s["baseline"])
        self.positions, self.hull_pts = np.array(s["positions"]), np.array(s["hull_pts"])
        self.area = float(s["area"])
        self._leave_base = [float(v) for v in np.asarray(s.get("leave_base", np.zeros(0))).ravel()]


class Interrupt:
    """Ctrl-C sets a flag; the loop checkpoints at the end of the iteration, then stops. Twice: stop now."""

    def __init__(self) -> None:
        self.flag, self.old = False, None

    def __enter__(self) -> Interrupt:
        if threading.current_thread() is threading.main_thread():
            self.old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, *_: Any) -> None:
        if self.flag:
            raise KeyboardInterrupt
        self.flag = True

    def __exit__(self, *exc: Any) -> None:
        if self.old is not None:
            signal.signal(signal.SIGINT, self.old)
