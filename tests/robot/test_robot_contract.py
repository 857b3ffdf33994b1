"""Every registered robot satisfies the Robot contract (check_robot)."""

from __future__ import annotations

import pytest

from robot import ROBOTS, make_robot
from robot.contract import check_robot
from robot.registry import UnknownRobotError


@pytest.mark.parametrize("name", sorted(ROBOTS))
@pytest.mark.parametrize("arm", ["gantry", "arm"])
def test_check_robot(name: str, arm: str) -> None:
    check_robot(make_robot(name, arm=arm, size=32))


def test_safety_margin_clips() -> None:
    robot = make_robot("sim", arm="gantry", size=16, safety_margin=0.1)
    check_robot(robot)
    with robot:
        sent = robot.send_action([0.0, 1.0])
    assert sent.tolist() == pytest.approx([0.1, 0.9])


def test_unknown_robot_lists_available() -> None:
    with pytest.raises(UnknownRobotError, match="available: sim"):
        make_robot("simm")
