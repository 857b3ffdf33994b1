"""The `Robot` interface: what the curiosity loop and the on-robot runtime talk to.

A robot has a camera and D motors. Motor commands are *normalised*: each axis in [0, 1], mapped by the
robot to its own joint or carriage range. ``send_action`` clips a command to the robot's safety limits
and returns the command actually sent. A real robot implements the same five methods (see README).
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from typing import Any

import numpy as np


class RobotError(RuntimeError):
    """Base class of robot errors; the message says how to fix the problem."""


class NotConnectedError(RobotError):
    def __init__(self, name: str) -> None:
        super().__init__(f"robot {name!r} is not connected; call robot.connect() or use `with robot:`")


class ActionError(RobotError, ValueError):
    """An action of the wrong shape or with NaN/inf values."""


@dataclasses.dataclass(frozen=True)
class Feature:
    """Describes one entry of an observation or action dict.

    shape: array shape; dtype: numpy dtype name; low/high: value range (per axis for vectors);
    names: per-axis names for vectors (e.g. ``("x", "y")``); unit: what one unit means.
    """

    shape: tuple[int, ...]
    dtype: str
    low: float | tuple[float, ...] = 0.0
    high: float | tuple[float, ...] = 1.0
    names: tuple[str, ...] = ()
    unit: str = ""


class Robot(ABC):
    """A camera robot with D normalised motor axes.

    Subclasses implement ``_connect``, ``_disconnect``, ``_get_observation`` and ``_send_action`` and
    declare ``observation_features`` / ``action_features``. The base class handles the connection state,
    the context manager, validation and clipping of actions to ``[action_low, action_high]``.
    """

    name: str = "robot"

    def __init__(self) -> None:
        self._connected = False

    # -- connection -------------------------------------------------------------------------------
    @property
    def is_connected(self) -> bool:
        return self._connected

    def connect(self) -> None:
        if not self._connected:
            self._connect()
            self._connected = True

    def disconnect(self) -> None:
        if self._connected:
            self._disconnect()
            self._connected = False

    def __enter__(self) -> Robot:
        self.connect()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.disconnect()

    # -- features ---------------------------------------------------------------------------------
    @property
    @abstractmethod
    def observation_features(self) -> dict[str, Feature]:
        """At least ``image`` (H, W, 3) uint8 RGB and ``motor`` (D,) float32 in [0, 1]."""

    @property
    @abstractmethod
    def action_features(self) -> dict[str, Feature]:
        """``motor``: (D,) float32, normalised target position per axis."""

    @property
    def action_dim(self) -> int:
        return self.action_features["motor"].shape[0]

    @property
    def action_low(self) -> np.ndarray:
        """Safety limit per axis (normalised); commands below are clipped up to it."""
        return np.broadcast_to(np.asarray(self.action_features["motor"].low, np.float32), (self.action_dim,))

    @property
    def action_high(self) -> np.ndarray:
        return np.broadcast_to(np.asarray(self.action_features["motor"].high, np.float32), (self.action_dim,))

    # -- I/O --------------------------------------------------------------------------------------
    def get_observation(self) -> dict[str, np.ndarray]:
        """Current camera image and motor position: {"image": (H,W,3) uint8, "motor": (D,) float32}."""
        if not self._connected:
            raise NotConnectedError(self.name)
        return self._get_observation()

    def send_action(self, action: np.ndarray | dict[str, np.ndarray]) -> np.ndarray:
        """Move to the normalised target ``action`` (D,); returns the (D,) float32 target actually sent."""
        if not self._connected:
            raise NotConnectedError(self.name)
        if isinstance(action, dict):
            action = action["motor"]
        a = np.asarray(action, dtype=np.float32).reshape(-1)
        if a.shape != (self.action_dim,):
            raise ActionError(f"{self.name}: action has shape {a.shape}, expected ({self.action_dim},)")
        if not np.all(np.isfinite(a)):
            raise ActionError(f"{self.name}: action {a.tolist()} has NaN or inf; send finite values in [0, 1]")
        sent = np.clip(a, self.action_low, self.action_high).astype(np.float32)
        self._send_action(sent)
        return sent

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must keep of the robot itself for a resumed run to see the same frames as an
        uninterrupted one (e.g. a simulator's random generators), as JSON values; {} for a real robot."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()`` (called once the resumed run has moved back to its checkpoint's position); a
        robot without such state ignores it."""
        del state

    @abstractmethod
    def _connect(self) -> None: ...

    @abstractmethod
    def _disconnect(self) -> None: ...

    @abstractmethod
    def _get_observation(self) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def _send_action(self, action: np.ndarray) -> None: ...
