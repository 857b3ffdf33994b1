"""`microfarm explore` (and `python launch.py`): a curiosity-driven exploration run from command-line flags."""

from __future__ import annotations

import sys

from microfarm_toolkit import parse_config

__all__ = ["cli"]


def cli(argv: list[str]) -> int:
    """Parse ``ExploreConfig`` flags and run; returns 0, or 1 when training diverged (one-line message)."""
    from robot.explore import ExploreConfig, TrainingDivergedError, run

    cfg = parse_config(ExploreConfig, argv, prog="microfarm explore")
    try:
        out = run(cfg)
    except TrainingDivergedError as e:
        print(f"microfarm explore: training diverged: {e}", file=sys.stderr)
        return 1
    print(f"run written to {out}")
    return 0
