"""Gymnasium environments: a camera arm over the microfarm bed.

``microfarm/GantryCamera-v0`` and ``microfarm/ArmCamera-v0`` (registered on ``import sim``).

- action: ``Box(0, 1, (D,), float32)``, the absolute target in normalised motor coordinates; the env
  clips it, moves the camera there (kinematically) and returns what the camera sees there.
- observation: ``Dict(image=Box(0, 255, (H, W, 3), uint8), motor=Box(0, 1, (D,), float32))``.
- reward 0 (exploration is intrinsically motivated), never terminates; wrap with a TimeLimit if needed.
- info: ``camera_xyz`` (3,) metres; with ``masks=True`` also ``species_mask`` (H,W) uint8 and
  ``instance_mask`` (H,W) uint16 (0 = no plant); with ``depth=True`` ``depth`` (H,W) float32 metres;
  with ``path_frames=True`` ``path``: a list of ``{"motor": (D,), "image": (H,W,3)}`` at every
  ``path_step`` (normalised units) along the straight line in motor space from the previous position to
  the new one, the new position last; with a ``distractor`` region (``sim.distractor``) ``in_distractor``
  (bool: the optical axis meets the soil inside it) and ``distractor_fraction`` (share of the frame's pixels
  that show it).
"""

from __future__ import annotations

import math
import os
from typing import Any

import gymnasium as gym
import numpy as np
import pybullet as p
from gymnasium import spaces

from sim.arms import CameraArm, arm_spec
from sim.camera import Camera, CameraConfig
from sim.distractor import DistractorRegion
from sim.scene import Scene, build_scene


class CameraArmEnv(gym.Env):
    """A camera arm (``arm`` "gantry" or "arm") over a procedural plant bed.

    Parameters: size (pixels, square), fov (degrees), height (camera height above the soil, metres, when
    dof=2), dof (2, or 3 with a height axis), masks/depth/path_frames (extra info), path_step (normalised
    distance between path frames; 5 mm on the gantry = 0.0067), scene_seed (the bed layout; None: drawn
    from reset's seed), randomize (domain randomisation), density (plant count factor), start (initial
    normalised motor position), distractor (None, or a box ``(x0, y0, x1, y1)`` of the bed in bed fractions,
    or its ``"x0,y0,x1,y1"`` string: leaves in the wind there, re-drawn at every render, see
    ``sim.distractor``), render_mode None | "rgb_array" | "human" (PyBullet GUI).
    """

    metadata = {"render_modes": ["rgb_array", "human"], "render_fps": 30}

    def __init__(self, arm: str = "gantry", size: int = 64, fov: float = 60.0, height: float = 0.3,
                 dof: int = 2, masks: bool = False, depth: bool = False, path_frames: bool = False,
                 path_step: float = 0.005 / 0.75, scene_seed: int | None = 0, randomize: bool = False,
                 density: float = 1.0, start: tuple[float, ...] | None = None,
                 distractor: tuple[float, float, float, float] | str | None = None,
                 render_mode: str | None = None) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode {render_mode!r} is not one of {self.metadata['render_modes']}")
        if size < 8:
            raise ValueError(f"size must be >= 8 pixels, got {size}")
        self.spec_arm = arm_spec(arm, dof, height)  # validates arm and dof
        self.arm_name, self.dof, self.height = arm, dof, height
        self.camera_config = CameraConfig(size, fov)
        self.masks, self.depth, self.path_frames, self.path_step = masks, depth, path_frames, path_step
        self.scene_seed, self.randomize, self.density = scene_seed, randomize, density
        self.start = np.asarray(start if start is not None else [0.5] * dof, np.float32)
        self.distractor = None if distractor is None else DistractorRegion(distractor)  # type: ignore[arg-type]
        self._wind_rng = np.random.default_rng(0)
        self.render_mode = render_mode
        self.action_space = spaces.Box(0.0, 1.0, (dof,), np.float32)
        self.observation_space = spaces.Dict({
            "image": spaces.Box(0, 255, (size, size, 3), np.uint8),
            "motor": spaces.Box(0.0, 1.0, (dof,), np.float32),
        })
        if render_mode == "human" and not os.environ.get("DISPLAY"):
            raise RuntimeError("render_mode='human' opens the PyBullet GUI and needs a display (DISPLAY is unset); "
                               "use render_mode='rgb_array', or run under xvfb-run")
        self.client = p.connect(p.GUI if render_mode == "human" else p.DIRECT)
        self.scene: Scene | None = None
        self.arm: CameraArm | None = None
        self.camera = Camera(self.client, self.camera_config)
        self._last_image: np.ndarray | None = None

    # -- gymnasium API ------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        p.resetSimulation(physicsClientId=self.client)
        if self.render_mode == "human":
            p.configureDebugVisualizer(p.COV_ENABLE_RENDERING, 0, physicsClientId=self.client)
        layout_seed = self.scene_seed if self.scene_seed is not None else int(self.np_random.integers(2**31))
        self._wind_rng = np.random.default_rng([layout_seed if seed is None else seed, 77])
        self.scene = build_scene(self.client, layout_seed, randomize=self.randomize, density=self.density)
        self.arm = CameraArm(self.client, self.arm_name, self.dof, self.height)
        if self.render_mode == "human":
            p.configureDebugVisualizer(p.COV_ENABLE_RENDERING, 1, physicsClientId=self.client)
        start = np.asarray((options or {}).get("motor", self.start), np.float32)
        self.arm.set_motor(np.clip(start, 0.0, 1.0))
        obs, info = self._observe()
        if self.path_frames:
            info["path"] = [{"motor": obs["motor"].copy(), "image": obs["image"]}]
        return obs, info

    def step(self, action: np.ndarray):
        if self.arm is None:
            raise RuntimeError("call reset() before step()")
        target = np.clip(np.asarray(action, np.float32).reshape(self.dof), 0.0, 1.0)
        if not np.all(np.isfinite(target)):
            raise ValueError(f"action {np.asarray(action).tolist()} is not finite")
        path = []
        if self.path_frames:
            start = self.arm.motor.astype(np.float64)
            n = max(1, math.ceil(float(np.linalg.norm(target - start)) / self.path_step - 1e-6))
            for k in range(1, n):
                m = (start + (target - start) * (k / n)).astype(np.float32)
                self.arm.set_motor(m)
                path.append({"motor": m, "image": self._render_rgb()})
        self.arm.set_motor(target)
        obs, info = self._observe()
        if self.path_frames:
            path.append({"motor": obs["motor"].copy(), "image": obs["image"]})
            info["path"] = path
        return obs, 0.0, False, False, info

    def render(self) -> np.ndarray | None:
        """rgb_array: the current camera image (H, W, 3) uint8; human: the GUI shows the scene itself."""
        if self.render_mode == "rgb_array":
            return None if self._last_image is None else self._last_image.copy()
        return None

    def close(self) -> None:
        if self.client is not None and p.isConnected(self.client):
            p.disconnect(self.client)
        self.client = None  # type: ignore[assignment]

    def random_state(self) -> dict[str, Any]:
        """The states of the env's random generators after ``reset``: ``noise`` (the camera noise of randomised
        scenes, ``np_random``) and ``wind`` (the distractor's leaves), JSON values (numpy bit-generator states)."""
        return {"noise": self.np_random.bit_generator.state, "wind": self._wind_rng.bit_generator.state}

    def set_random_state(self, state: dict[str, Any]) -> None:
        """Restore ``random_state()``'s generators (e.g. when a run resumes from its checkpoint); missing keys are
        left as they are."""
        if "noise" in state:
            self.np_random.bit_generator.state = state["noise"]
        if "wind" in state:
            self._wind_rng.bit_generator.state = state["wind"]

    # -- internals ------------------------------------------------------------------------------------
    def _render_rgb(self) -> np.ndarray:
        assert self.arm is not None and self.scene is not None
        pos, rot = self.arm.camera_pose()
        frame = self.camera.render(pos, rot, light=self.scene.render_kwargs())
        image = self.scene.postprocess(frame.rgb, self.np_random)
        if self.distractor is not None:
            image = self.distractor.apply(image, pos, rot, self.camera_config.fov, self._wind_rng)[0]
        return image

    def _observe(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        assert self.arm is not None and self.scene is not None
        pos, rot = self.arm.camera_pose()
        frame = self.camera.render(pos, rot, segmentation=self.masks, depth=self.depth,
                                   light=self.scene.render_kwargs())
        image = self.scene.postprocess(frame.rgb, self.np_random)
        info: dict[str, Any] = {"camera_xyz": pos.astype(np.float32)}
        if self.distractor is not None:
            image, wind = self.distractor.apply(image, pos, rot, self.camera_config.fov, self._wind_rng)
            info["in_distractor"] = self.distractor.in_region(pos, rot)
            info["distractor_fraction"] = float(wind.mean())
        self._last_image = image
        if self.masks:
            assert frame.seg is not None
            info["species_mask"], info["instance_mask"] = self.scene.masks_from_seg(frame.seg)
        if self.depth:
            info["depth"] = frame.depth
        return {"image": image, "motor": self.arm.motor.copy()}, info


class GantryCameraEnv(CameraArmEnv):
    """``microfarm/GantryCamera-v0``: the paper's x/y gantry at a fixed height (dof=3 adds height)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(arm="gantry", **kwargs)


class ArmCameraEnv(CameraArmEnv):
    """``microfarm/ArmCamera-v0``: a 2-DoF shoulder/elbow arm; the camera position is nonlinear in q."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(arm="arm", **kwargs)


ENV_IDS = {"gantry": "microfarm/GantryCamera-v0", "arm": "microfarm/ArmCamera-v0"}


def register_envs() -> None:
    """Register both envs with string entry points (idempotent)."""
    for arm, env_id in ENV_IDS.items():
        if env_id not in gym.registry:
            entry = "sim.envs:GantryCameraEnv" if arm == "gantry" else "sim.envs:ArmCameraEnv"
            gym.register(id=env_id, entry_point=entry, disable_env_checker=False)
