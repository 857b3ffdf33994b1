"""Curiosity-driven exploration (Schillaci et al. 2020) and the Robot interface."""

from robot.base import ActionError, Feature, NotConnectedError, Robot, RobotError
from robot.registry import ROBOTS, make_robot, register_robot

__all__ = ["Robot", "RobotError", "ActionError", "NotConnectedError", "Feature", "ROBOTS", "make_robot",
           "register_robot"]
