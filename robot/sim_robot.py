"""`SimRobot`: the `Robot` interface over a simulated camera arm (a Gymnasium env of `sim`).

The robot side of the simulator (docs/architecture.md): `robot` reaches `sim` only here and in the export command
(`robot.export_cli`), and `sim` knows nothing of `Robot`. Registered as ``sim`` (``robot.registry``); importing this
module loads pybullet.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from robot.base import Feature, Robot
from sim.distractor import parse_region
from sim.envs import ENV_IDS

__all__ = ["SimRobot", "parse_distractor"]


def parse_distractor(value: str) -> tuple[float, float, float, float]:
    """The distractor box ``(x0, y0, x1, y1)`` (bed fractions) of ``"x0,y0,x1,y1"``; one-line ``ValueError``."""
    return parse_region(value)


class SimRobot(Robot):
    """A simulated camera robot.

    arm: "gantry" or "arm"; size: image side in pixels; seed: the env's reset seed; safety_margin: the
    normalised distance kept from each joint limit (commands are clipped to [margin, 1 - margin]);
    env_kwargs: passed to the env (``dof``, ``height``, ``fov``, ``path_frames``, ``scene_seed``, ...).
    After ``send_action``, ``path_observations`` lists ``{"motor", "image"}`` along the move when the
    env has ``path_frames=True`` (else just the final observation).
    """

    name = "sim"

    def __init__(self, arm: str = "gantry", size: int = 64, seed: int = 0, safety_margin: float = 0.0,
                 gui: bool = False, **env_kwargs: Any) -> None:
        super().__init__()
        if arm not in ENV_IDS:
            raise ValueError(f"unknown arm {arm!r}; choose one of: {', '.join(ENV_IDS)}")
        if not 0.0 <= safety_margin < 0.5:
            raise ValueError(f"safety_margin must be in [0, 0.5), got {safety_margin}")
        self.arm, self.size, self.seed, self.safety_margin = arm, size, seed, safety_margin
        self.env_id = ENV_IDS[arm]
        self.env_kwargs = {"size": size, **env_kwargs}
        if gui:
            self.env_kwargs["render_mode"] = "human"
        self.env: gym.Env | None = None
        self._obs: dict[str, np.ndarray] | None = None
        self.path_observations: list[dict[str, np.ndarray]] = []
        self.last_info: dict[str, Any] = {}
        self.dof = int(env_kwargs.get("dof", 2))

    @property
    def observation_features(self) -> dict[str, Feature]:
        names = ("x", "y", "z") if self.arm == "gantry" else ("shoulder", "elbow", "z")
        return {"image": Feature((self.size, self.size, 3), "uint8", 0, 255, ("row", "col", "rgb"), "pixel"),
                "motor": Feature((self.dof,), "float32", 0.0, 1.0, names[: self.dof], "normalised")}

    @property
    def action_features(self) -> dict[str, Feature]:
        names = self.observation_features["motor"].names
        lo, hi = self.safety_margin, 1.0 - self.safety_margin
        return {"motor": Feature((self.dof,), "float32", (lo,) * self.dof, (hi,) * self.dof, names, "normalised")}

    def _connect(self) -> None:
        import sim  # noqa: F401  (registers the envs)

        self.env = gym.make(self.env_id, **self.env_kwargs).unwrapped
        self._obs, self.last_info = self.env.reset(seed=self.seed)
        self.path_observations = [self._obs]

    def _disconnect(self) -> None:
        if self.env is not None:
            self.env.close()
        self.env = None

    def _get_observation(self) -> dict[str, np.ndarray]:
        assert self._obs is not None
        return {k: v.copy() for k, v in self._obs.items()}

    def _send_action(self, action: np.ndarray) -> None:
        assert self.env is not None
        self._obs, _, _, _, self.last_info = self.env.step(action)
        self.path_observations = self.last_info.get("path", [self._obs])

    def state_dict(self) -> dict[str, Any]:
        """The env's random generators (camera noise, leaves in the wind): ``sim.envs`` ``random_state``."""
        return {} if self.env is None else {"random": self.env.random_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.env is not None and "random" in state:
            self.env.set_random_state(state["random"])
