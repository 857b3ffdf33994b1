"""Every registered robot satisfies the Robot contract (check_robot)."""

from __future__ import annotations

from pathlib import Path

import pytest

from robot import ROBOTS, make_robot
from robot.contract import check_robot
from robot.registry import UnknownRobotError


def _frames(folder: Path, n: int = 3, h: int = 24, w: int = 32) -> Path:
    """``n`` distinct RGB frames (frame_<i>.png, each a flat colour) in ``folder``; returns it."""
    import cv2
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        cv2.imwrite(str(folder / f"frame_{i:03d}.png"), np.full((h, w, 3), (10 * i, 100, 200), np.uint8))
    return folder


def test_every_registered_robot_is_checked() -> None:
    assert set(ROBOTS) == {"sim", "files"}  # a new robot: add it to the contract tests below


@pytest.mark.parametrize("arm", ["gantry", "arm"])
def test_check_robot_sim(arm: str) -> None:
    check_robot(make_robot("sim", arm=arm, size=32))


def test_check_robot_files(tmp_path: Path) -> None:
    check_robot(make_robot(f"files:{_frames(tmp_path / 'f')}"))
    check_robot(make_robot(f"files:{_frames(tmp_path / 'g')}", size=16, dof=3))


def test_safety_margin_clips() -> None:
    robot = make_robot("sim", arm="gantry", size=16, safety_margin=0.1)
    check_robot(robot)
    with robot:
        sent = robot.send_action([0.0, 1.0])
    assert sent.tolist() == pytest.approx([0.1, 0.9])


def test_unknown_robot_lists_available() -> None:
    with pytest.raises(UnknownRobotError, match="available: files, sim"):
        make_robot("simm")
    with pytest.raises(UnknownRobotError, match="unknown robot 'file:frames' \\(did you mean 'files'"):
        make_robot("file:frames")
