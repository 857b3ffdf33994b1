"""Robots by name, with string entry points so that `robot` never imports `sim` unless asked.

``make_robot("NAME:ARG")`` passes ``ARG`` (a string) as the first argument of the robot registered as ``NAME``:
``files:DIR`` is ``FileCameraRobot(DIR)``, frames replayed from a folder (``microfarm deploy --robot files:DIR``).
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any

from robot.base import Robot, RobotError

ROBOTS: dict[str, str] = {
    "sim": "robot.sim_robot:SimRobot",
    "files": "robot.file_camera:FileCameraRobot",
}


class UnknownRobotError(RobotError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def register_robot(name: str, entry_point: str) -> None:
    """Register ``"module:ClassName"`` under ``name`` (a real robot's subclass, for instance)."""
    ROBOTS[name] = entry_point


def split_robot_name(name: str) -> tuple[str, str | None]:
    """``"files:DIR"`` -> ``("files", "DIR")``; a registered name (even one with a colon) -> ``(name, None)``."""
    if name in ROBOTS or ":" not in name:
        return name, None
    key, arg = name.split(":", 1)
    return (key, arg) if key in ROBOTS else (name, None)


def make_robot(name: str, **kwargs: Any) -> Robot:
    """Build the robot registered as ``name`` (``NAME:ARG``: with ``ARG`` as its first argument); unknown names
    list the available ones. A robot whose module needs a missing extra (``sim``: pybullet) raises
    ``ModuleNotFoundError`` saying which ``pip install 'microfarm[...]'`` brings it."""
    key, arg = split_robot_name(name)
    if key not in ROBOTS:
        close = difflib.get_close_matches(key.split(":", 1)[0], list(ROBOTS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UnknownRobotError(f"unknown robot {name!r}{hint}; available: {', '.join(sorted(ROBOTS))}")
    module, cls = ROBOTS[key].split(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        from microfarm_toolkit import missing_dependency

        msg = missing_dependency(e)
        if msg is None:
            raise
        raise ModuleNotFoundError(msg, name=e.name) from None
    return getattr(mod, cls)(*(() if arg is None else (arg,)), **kwargs)
