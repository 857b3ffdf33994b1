"""Robots by name, with string entry points so that `robot` never imports `sim` unless asked."""

from __future__ import annotations

import difflib
import importlib
from typing import Any

from robot.base import Robot, RobotError

ROBOTS: dict[str, str] = {
    "sim": "sim.robot:SimRobot",
}


class UnknownRobotError(RobotError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def register_robot(name: str, entry_point: str) -> None:
    """Register ``"module:ClassName"`` under ``name`` (a real robot's subclass, for instance)."""
    ROBOTS[name] = entry_point


def make_robot(name: str, **kwargs: Any) -> Robot:
    """Build the robot registered as ``name``; unknown names list the available ones."""
    if name not in ROBOTS:
        close = difflib.get_close_matches(name, list(ROBOTS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UnknownRobotError(f"unknown robot {name!r}{hint}; available: {', '.join(sorted(ROBOTS))}")
    module, cls = ROBOTS[name].split(":")
    return getattr(importlib.import_module(module), cls)(**kwargs)
