"""The two camera arms: a gantry (the paper's robot) and a 2-DoF revolute arm, as PyBullet multibodies.

World frame: metres, z up; the bed spans x, y in [0, 0.75], soil at z = 0. Both arms carry a camera that
looks straight down (-z of the camera link). Motors are *normalised*: each axis in [0, 1] maps linearly to
its joint range (metres for prismatic joints, radians for revolute ones); the normalised range is the
joint limit, so clipping to [0, 1] (minus an optional safety margin) is the safety limit.

Axes: gantry (x, y[, z]) — carriage position over the bed and, with dof=3, camera height;
arm (shoulder, elbow[, z]) — revolute joints about the vertical axis, base at the bed's -y side.
"""

from __future__ import annotations

import dataclasses
import difflib
import math

import numpy as np
import pybullet as p

BED_SIZE = 0.75  # metres


@dataclasses.dataclass(frozen=True)
class ArmSpec:
    """Static description of an arm. ``joint_low/high`` per motor axis, in joint units (m or rad)."""

    name: str
    axis_names: tuple[str, ...]
    joint_low: tuple[float, ...]
    joint_high: tuple[float, ...]
    units: tuple[str, ...]


def arm_spec(arm: str, dof: int = 2, height: float = 0.3, height_range: tuple[float, float] = (0.18, 0.5)) -> ArmSpec:
    """Joint ranges of ``arm`` ("gantry" or "arm") with ``dof`` 2 (fixed camera height) or 3 (height axis)."""
    if dof not in (2, 3):
        raise ValueError(f"dof must be 2 or 3, got {dof}")
    if arm == "gantry":
        names, low, high, units = ["x", "y"], [0.0, 0.0], [BED_SIZE, BED_SIZE], ["m", "m"]
    elif arm == "arm":
        names, units = ["shoulder", "elbow"], ["rad", "rad"]
        low, high = [math.radians(-30.0), math.radians(40.0)], [math.radians(115.0), math.radians(165.0)]
    else:
        close = difflib.get_close_matches(arm, ARMS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown arm {arm!r}{hint}; choose one of: {', '.join(ARMS)}")
    if dof == 3:
        names, units = names + ["z"], units + ["m"]
        low, high = low + [height_range[0]], high + [height_range[1]]
    return ArmSpec(arm, tuple(names), tuple(low), tuple(high), tuple(units))


ARMS = ("gantry", "arm")

# The revolute arm's geometry: base (shoulder axis) position and link lengths, metres.
ARM_BASE_XY = (0.375, -0.15)
ARM_L1, ARM_L2 = 0.60, 0.45
MOUNT_CLEARANCE = 0.06  # links run this far above the camera so that it never sees them


class CameraArm:
    """A camera arm body in one PyBullet client.

    ``set_motor(m)`` teleports the joints to the normalised position ``m`` (D,) (kinematic: no dynamics);
    ``camera_pose()`` returns the camera link's world position (3,) and rotation matrix (3, 3) whose
    columns are the camera's right, up and backward (-viewing) axes.
    """

    def __init__(self, client: int, arm: str, dof: int = 2, height: float = 0.3) -> None:
        self.client = client
        self.spec = arm_spec(arm, dof, height)
        self.dof = dof
        self.height = height
        self._lo = np.asarray(self.spec.joint_low, np.float64)
        self._hi = np.asarray(self.spec.joint_high, np.float64)
        self.uid = self._build_gantry() if arm == "gantry" else self._build_arm()
        self.camera_link = p.getNumJoints(self.uid, physicsClientId=client) - 1
        self.motor = np.full(dof, 0.5, np.float32)

    # -- bodies ---------------------------------------------------------------------------------
    def _box(self, half: tuple[float, float, float], rgba: tuple[float, ...], offset=(0.0, 0.0, 0.0)) -> int:
        return p.createVisualShape(p.GEOM_BOX, halfExtents=half, rgbaColor=rgba, visualFramePosition=offset,
                                   physicsClientId=self.client)

    def _body(self, base_pos, base_vis: int, links: list[tuple[int, tuple, int, tuple]]) -> int:
        """links: (visual, position in parent frame, joint type, joint axis)."""
        n = len(links)
        return p.createMultiBody(
            baseMass=0, baseVisualShapeIndex=base_vis, basePosition=base_pos,
            linkMasses=[0.0] * n, linkCollisionShapeIndices=[-1] * n,
            linkVisualShapeIndices=[v for v, _, _, _ in links], linkPositions=[pos for _, pos, _, _ in links],
            linkOrientations=[(0, 0, 0, 1)] * n, linkInertialFramePositions=[(0, 0, 0)] * n,
            linkInertialFrameOrientations=[(0, 0, 0, 1)] * n, linkParentIndices=list(range(n)),
            linkJointTypes=[t for _, _, t, _ in links], linkJointAxis=[a for _, _, _, a in links],
            physicsClientId=self.client)

    def _top(self) -> float:
        """Height of the carriage / links above the soil: above the highest camera position, never in view."""
        highest = self.spec.joint_high[2] if self.dof == 3 else self.height
        return highest + MOUNT_CLEARANCE

    def _slide_z(self) -> float:
        """Height of the camera slide's box centre above its link origin: always just above the camera."""
        return 0.045 + (0.0 if self.dof == 3 else self.height)

    def _build_gantry(self) -> int:
        grey, dark = (0.6, 0.6, 0.62, 1.0), (0.15, 0.15, 0.17, 1.0)
        top = self._top()  # height of the carriage above the soil
        rail = self._box((0.02, BED_SIZE / 2 + 0.1, 0.02), grey, offset=(0.0, BED_SIZE / 2, 0.0))
        links = [
            # x carriage: a bridge spanning y; joint value = camera x
            (self._box((0.025, BED_SIZE / 2 + 0.1, 0.015), grey, (0, BED_SIZE / 2, 0.03)), (0, 0, 0),
             p.JOINT_PRISMATIC, (1, 0, 0)),
            # y carriage; joint value = camera y
            (self._box((0.04, 0.04, 0.03), dark), (0, 0, 0), p.JOINT_PRISMATIC, (0, 1, 0)),
        ]
        z_type = p.JOINT_PRISMATIC if self.dof == 3 else p.JOINT_FIXED
        # z slide: joint value = camera height above soil (link origin at base height 0 + value)
        links.append((self._box((0.015, 0.015, 0.04), grey, (0, 0, self._slide_z())), (0, 0, -top), z_type,
                      (0, 0, 1)))
        links.append((-1, (0, 0, 0 if self.dof == 3 else self.height), p.JOINT_FIXED, (0, 0, 1)))  # camera
        return self._body((0.0, 0.0, top), rail, links)

    def _build_arm(self) -> int:
        grey, orange = (0.55, 0.55, 0.58, 1.0), (0.95, 0.55, 0.1, 1.0)
        top = self._top()
        pillar = self._box((0.04, 0.04, top / 2), grey, offset=(0, 0, -top / 2))
        links = [
            (self._box((ARM_L1 / 2, 0.025, 0.02), orange, (ARM_L1 / 2, 0, 0.0)), (0, 0, 0), p.JOINT_REVOLUTE,
             (0, 0, 1)),
            (self._box((ARM_L2 / 2, 0.02, 0.015), orange, (ARM_L2 / 2, 0, -0.035)), (ARM_L1, 0, 0),
             p.JOINT_REVOLUTE, (0, 0, 1)),
        ]
        z_type = p.JOINT_PRISMATIC if self.dof == 3 else p.JOINT_FIXED
        links.append((self._box((0.015, 0.015, 0.04), grey, (0, 0, self._slide_z())), (ARM_L2, 0, -top), z_type,
                      (0, 0, 1)))
        links.append((-1, (0, 0, 0 if self.dof == 3 else self.height), p.JOINT_FIXED, (0, 0, 1)))
        return self._body((ARM_BASE_XY[0], ARM_BASE_XY[1], top), pillar, links)

    # -- motion ---------------------------------------------------------------------------------
    def joints_from_motor(self, motor: np.ndarray) -> np.ndarray:
        """Normalised motor (D,) in [0,1] -> joint values (D,) in metres / radians."""
        return self._lo + np.asarray(motor, np.float64) * (self._hi - self._lo)

    def set_motor(self, motor: np.ndarray) -> None:
        """Teleport to normalised ``motor`` (D,), already clipped to [0, 1]."""
        q = self.joints_from_motor(motor)
        for j in range(self.dof):
            p.resetJointState(self.uid, j, float(q[j]), physicsClientId=self.client)
        self.motor = np.asarray(motor, np.float32).copy()

    def camera_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """World position (3,) of the camera and its rotation matrix (3,3) (columns: link x, y, z axes)."""
        state = p.getLinkState(self.uid, self.camera_link, computeForwardKinematics=True,
                               physicsClientId=self.client)
        pos, orn = state[4], state[5]
        rot = np.asarray(p.getMatrixFromQuaternion(orn), np.float64).reshape(3, 3)
        return np.asarray(pos, np.float64), rot


def camera_xy(arm: str, motor: np.ndarray, dof: int = 2) -> np.ndarray:
    """Closed-form camera position over the bed (x, y) in metres for normalised ``motor`` (..., D).

    Matches ``CameraArm.camera_pose`` (tested); used for plots and the explored-area measure.
    """
    spec = arm_spec(arm, dof)
    m = np.asarray(motor, np.float64)
    q = np.asarray(spec.joint_low) + m * (np.asarray(spec.joint_high) - np.asarray(spec.joint_low))
    if arm == "gantry":
        return q[..., :2]
    a1, a2 = q[..., 0], q[..., 0] + q[..., 1]
    x = ARM_BASE_XY[0] + ARM_L1 * np.cos(a1) + ARM_L2 * np.cos(a2)
    y = ARM_BASE_XY[1] + ARM_L1 * np.sin(a1) + ARM_L2 * np.sin(a2)
    return np.stack([x, y], axis=-1)
