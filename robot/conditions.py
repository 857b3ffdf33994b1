"""Where curiosity should matter: a distractor region and unreachable goals, and the measures that show it.

Two conditions of the simulated farm make the goal space *not* uniformly learnable (issue 18):

- ``--distractor x0,y0,x1,y1``: a box of the bed (bed fractions) where leaves move in the wind: re-drawn at
  every render (``sim.distractor``), so no forward model can predict what the camera sees there;
- ``--unreachable-share S``: a share S of the goals is built from views the camera cannot reach:
  ``--unreachable-views bed`` another bed (scene seed + 1000) seen by the same arm, ``height`` the same bed from
  0.65 m (above every reachable camera height). ``round(S * n_goals)`` goals (at least one when S > 0) are made
  from those views, the rest from reachable views, both by the run's goal method; unreachable goals come last.

Measures, columns of ``metrics.csv`` (all defined without the conditions too):

- ``fwd_mse_learn``, ``inv_mse_learn``: test errors on the *learnable* test positions only (views without a
  single distractor pixel; all positions without a distractor);
- ``distractor_moves``: share of the moves so far whose view centre (optical axis on the soil) lies in the box;
- ``unreachable_choices``: share of the goal-directed commands so far that pursued an unreachable goal (NaN
  until the first goal-directed command, and always with ``--goals random``);
- ``coverage_learn``: share of the learnable cells of a 10 x 10 grid over the first two motor axes (cells whose
  centre view has no distractor pixel) that a learned position (move end or path frame) has fallen in.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from microfarm_toolkit import UsageError

__all__ = ["COLUMNS", "GRID", "UNREACHABLE_HEIGHT", "ConditionMeter", "check_conditions", "observe",
           "robot_kwargs", "unreachable_codes", "split_goals", "ENCODE_BATCH"]

COLUMNS = ("fwd_mse_learn", "inv_mse_learn", "distractor_moves", "unreachable_choices", "coverage_learn")
GRID = 10  # cells per axis of the coverage grid
# images per encoder batch: the paper encoder's first conv output is 4 MB per 64x64 image, so a batch of 256
# peaked at ~2.2 GB RSS; 32 keeps the run under ~1 GB at the same speed
ENCODE_BATCH = 32
UNREACHABLE_HEIGHT = 0.65  # metres; the gantry's height axis (dof 3) reaches 0.5 at most
OTHER_BED = 1000  # scene-seed offset of the other bed


def check_conditions(cfg: Any) -> None:
    """One-line ``UsageError`` for a bad or contradictory distractor / unreachable-goal setting."""
    if cfg.distractor:
        from robot.sim_robot import parse_distractor

        try:
            parse_distractor(cfg.distractor)
        except ValueError as e:
            raise UsageError(f"--distractor: {e}") from None
    if not 0.0 <= cfg.unreachable_share <= 1.0:
        raise UsageError(f"--unreachable-share must be in [0, 1], got {cfg.unreachable_share}")
    uses_sim = cfg.robot == "sim"
    if (cfg.distractor or cfg.unreachable_share > 0) and not uses_sim:
        raise UsageError(f"--distractor and --unreachable-share need the simulated robot; drop them or use "
                         f"--robot sim (got --robot {cfg.robot})")
    if cfg.unreachable_share > 0 and cfg.goals == "random":
        raise UsageError("--unreachable-share has no effect with --goals random (random commands pursue no goal); "
                         "drop one of them")


def robot_kwargs(cfg: Any) -> dict[str, Any]:
    """Extra ``make_robot`` keyword arguments of the conditions (the distractor box for the sim env)."""
    return {"distractor": cfg.distractor} if cfg.distractor else {}


def observe(robot: Any, motors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Move to each normalised position of ``motors`` (N, D) and look.

    Returns images (N, H, W, 3) uint8, distractor fraction (N,) float64 (0 without a distractor) and view
    centre in the distractor (N,) bool."""
    images, frac, inside = [], [], []
    for m in motors:
        robot.send_action(m)
        images.append(robot.get_observation()["image"])
        info = getattr(robot, "last_info", None) or {}
        frac.append(float(info.get("distractor_fraction", 0.0)))
        inside.append(bool(info.get("in_distractor", False)))
    return np.stack(images), np.asarray(frac), np.asarray(inside)


def unreachable_codes(cfg: Any, ae: Any, n_views: int, size: int, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Codes (n_views, C) of views the robot cannot reach (see the module doc), at random motor positions."""
    from robot.registry import make_robot

    env: dict[str, Any] = {"scene_seed": OTHER_BED} if cfg.unreachable_views == "bed" else {
        "height": UNREACHABLE_HEIGHT}
    other = make_robot("sim", arm=cfg.arm, size=size, seed=cfg.seed, **env)  # no distractor: plain other views
    motors = np.random.default_rng(cfg.seed + 2).uniform(lo, hi, (n_views, len(lo))).astype(np.float32)
    other.connect()
    try:
        return ae.encode_images(observe(other, motors)[0], ENCODE_BATCH)
    finally:
        other.disconnect()


def split_goals(n_goals: int, share: float) -> int:
    """How many of ``n_goals`` goals are unreachable at ``share``: round(share * n), at least 1 when share > 0."""
    return 0 if share <= 0 else max(1, min(n_goals, int(round(share * n_goals))))


class ConditionMeter:
    """The measures of the module doc, kept as counts (checkpointed with ``state_dict``)."""

    def __init__(self, test_learnable: np.ndarray, goal_unreachable: np.ndarray, cell_learnable: np.ndarray) -> None:
        self.test_learnable = np.asarray(test_learnable, bool)  # (N_test,)
        self.goal_unreachable = np.asarray(goal_unreachable, bool)  # (n_goals,)
        self.cell_learnable = np.asarray(cell_learnable, bool).reshape(GRID * GRID)
        self.visited = np.zeros(GRID * GRID, bool)
        self.moves = self.into = self.directed = self.to_unreachable = 0

    @staticmethod
    def cells(motors: np.ndarray) -> np.ndarray:
        """Grid cell index (N,) of normalised positions (N, D) over the first two axes (x only when D = 1)."""
        m = np.clip(np.atleast_2d(motors).astype(np.float64), 0.0, 1.0 - 1e-9)  # float32 would round to 1
        i = (m[:, 0] * GRID).astype(np.int64)
        j = (m[:, 1] * GRID).astype(np.int64) if m.shape[1] > 1 else np.zeros(len(m), np.int64)
        return j * GRID + i

    @staticmethod
    def cell_centres(dim: int) -> np.ndarray:
        """(GRID * GRID, dim) float32 centres of the grid cells (further axes at 0.5), in ``cells`` order."""
        c = (np.arange(GRID) + 0.5) / GRID
        jj, ii = np.meshgrid(c, c, indexing="ij")
        out = np.full((GRID * GRID, dim), 0.5, np.float32)
        out[:, 0] = ii.ravel()
        if dim > 1:
            out[:, 1] = jj.ravel()
        return out

    def add_move(self, motors: np.ndarray, in_distractor: bool, goal: int, directed: bool) -> None:
        """One move: its learned positions (N, D), whether its view centre is in the distractor, the goal."""
        self.moves += 1
        self.into += int(in_distractor)
        if directed:
            self.directed += 1
            self.to_unreachable += int(self.goal_unreachable[goal])
        self.visited[self.cells(motors)] = True

    def row(self, errs: dict[str, Any]) -> dict[str, float]:
        """The measures now; ``errs``: ``OnlineModels.test_errors`` (with per-sample errors)."""
        learn = self.test_learnable
        n_cells = int(self.cell_learnable.sum())
        return {"fwd_mse_learn": float(errs["fwd_per_sample"][learn].mean()) if learn.any() else np.nan,
                "inv_mse_learn": float(errs["inv_per_sample"][learn].mean()) if learn.any() else np.nan,
                "distractor_moves": self.into / self.moves if self.moves else 0.0,
                "unreachable_choices": self.to_unreachable / self.directed if self.directed else np.nan,
                "coverage_learn": float((self.visited & self.cell_learnable).sum() / n_cells) if n_cells else np.nan}

    def state_dict(self) -> dict[str, Any]:
        return {"visited": self.visited.copy(),
                "counts": np.array([self.moves, self.into, self.directed, self.to_unreachable], np.int64)}

    def load_state_dict(self, s: dict[str, Any]) -> None:
        self.visited = np.asarray(s["visited"], bool).copy()
        self.moves, self.into, self.directed, self.to_unreachable = (int(v) for v in np.asarray(s["counts"]))
