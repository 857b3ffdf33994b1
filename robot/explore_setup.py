"""The fresh state of an exploration run: test set, goals (reachable and unreachable), learnable cells.

``setup_state(cfg, robot, ae)`` returns the dict that ``robot.explore`` keeps in ``st`` and checkpoints:
``test_motor`` (N, D) float32 normalised positions drawn with ``cfg.test_seed``, ``test_code`` (N, C) their codes,
``test_learnable`` (N,) bool (views without a distractor pixel), ``goals`` (n_goals, C) float32,
``goal_unreachable`` (n_goals,) bool (see ``robot.conditions``), ``cell_learnable`` (GRID * GRID,) bool,
``init_seed`` (the online models' initialisation: the run seed, or the Goldilocks choice of ``robot.init_select``
with ``--init-candidates N``) and ``init_candidates`` (one record per candidate), the
iteration, elapsed time and the run's RNG state. Every draw is seeded: a run without the issue-18 conditions
sees the same test set and goals as before they existed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from microfarm_toolkit import UsageError
from robot.conditions import ENCODE_BATCH, GRID, ConditionMeter, observe, split_goals, unreachable_codes
from robot.goals import make_goals

__all__ = ["setup_state", "ENCODE_BATCH"]


def _goal_codes(cfg: Any, robot: Any, ae: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """Codes (N, C) of the views the goals are built from, and their motor positions (N, D) (None: dataset)."""
    D, lo, hi = robot.action_dim, robot.action_low, robot.action_high
    if cfg.dataset is not None:
        path = Path(cfg.dataset) / "features.npz"
        if not path.is_file():
            raise UsageError(f"no features dataset at {str(cfg.dataset)!r} (missing features.npz); "
                             f"render one with `microfarm render --task features --arm {cfg.arm} --out DIR`")
        return ae.encode_images(np.load(path)["images"], ENCODE_BATCH), None
    views = np.random.default_rng(cfg.seed + 1).uniform(lo, hi, (cfg.goal_samples, D)).astype(np.float32)
    return ae.encode_images(observe(robot, views)[0], ENCODE_BATCH), views


def setup_state(cfg: Any, robot: Any, ae: Any) -> dict[str, Any]:
    """The seeded fresh state of a run (module doc); leaves the robot in the middle of its range."""
    D, lo, hi = robot.action_dim, robot.action_low, robot.action_high
    test_motor = np.random.default_rng(cfg.test_seed).uniform(lo, hi, (cfg.test_size, D)).astype(np.float32)
    images, frac, _ = observe(robot, test_motor)
    test_code = ae.encode_images(images, ENCODE_BATCH)
    n_far = split_goals(cfg.n_goals, cfg.unreachable_share)
    goal_codes, goal_motor = _goal_codes(cfg, robot, ae)
    init_seed, init_records = cfg.seed, []
    if cfg.init_candidates > 1 and goal_motor is not None:  # the Goldilocks choice (robot.init_select)
        from robot.init_select import choose_init

        b = cfg.batch_size
        init_seed, init_records = choose_init(D, ae.cfg.code_size, tuple(cfg.hidden), cfg.seed, cfg.init_candidates,
                                              goal_motor[:b], goal_codes[:b], cfg.init_criterion)
    parts = [make_goals(cfg.goals, goal_codes, cfg.n_goals - n_far, seed=cfg.seed)] if n_far < cfg.n_goals else []
    if n_far:
        far = unreachable_codes(cfg, ae, cfg.goal_samples, ae.cfg.size, lo, hi)
        parts.append(make_goals(cfg.goals, far, n_far, seed=cfg.seed))
    goals = np.concatenate(parts).astype(np.float32)
    cell_learnable = np.ones(GRID * GRID, bool)
    if cfg.distractor:
        cell_learnable = observe(robot, ConditionMeter.cell_centres(D).clip(lo, hi))[1] == 0
    robot.send_action(np.full(D, 0.5, np.float32).clip(lo, hi))  # every run starts in the middle
    return {"test_motor": test_motor, "test_code": test_code, "test_learnable": frac == 0, "goals": goals,
            "goal_unreachable": np.arange(cfg.n_goals) >= cfg.n_goals - n_far, "cell_learnable": cell_learnable,
            "init_seed": init_seed, "init_candidates": init_records, "iteration": 0, "elapsed": 0.0,
            "rng": np.random.default_rng(cfg.seed).bit_generator.state}
