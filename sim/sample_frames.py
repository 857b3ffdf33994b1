"""Sample frames of the simulated bed, for the checks of `microfarm export` (``models.bundle_export``).

- ``render_features(arm, size, n, seed)``: frames of the exploration bed at random motor positions (parity checks and
  int8 calibration of the encoder, forward and inverse models);
- ``render_segmentation(size, n, seed)``: frames of random bed layouts with their species masks (the segmentation
  models and the CRF).

The export takes them from its caller as a frame source (``models.export_checks.FrameSource``): the command,
``robot.export_cli``, passes these; ``models`` imports nothing of ``sim``.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from microfarm_toolkit import UsageError, quiet_stderr

__all__ = ["render_features", "render_segmentation"]


def render_features(arm: str, size: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` frames of the exploration bed at uniform random motor positions: (images uint8, motor float32)."""
    env_id = {"gantry": "microfarm/GantryCamera-v0", "arm": "microfarm/ArmCamera-v0"}.get(arm)
    if env_id is None:
        raise UsageError(f"the exploration run's arm {arm!r} is not a simulated arm (gantry, arm)")
    motors = np.random.default_rng(seed).uniform(0, 1, (n, 2)).astype(np.float32)
    with quiet_stderr():
        env = gym.make(env_id, size=size).unwrapped
    try:
        env.reset(seed=seed)
        imgs = np.stack([env.step(m)[0]["image"] for m in motors])
    finally:
        env.close()
    return imgs, motors


def render_segmentation(size: int, n: int, seed: int, views: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """``n`` frames of random bed layouts with species masks: (images uint8 (n,S,S,3), species uint8 (n,S,S))."""
    rng = np.random.default_rng(seed)
    with quiet_stderr():
        env = gym.make("microfarm/GantryCamera-v0", size=size, masks=True, scene_seed=None, randomize=True,
                       density=2.0).unwrapped
    imgs, masks = [], []
    try:
        while len(imgs) < n:
            env.reset(seed=int(rng.integers(2**31)))
            for _ in range(views):
                obs, _, _, _, info = env.step(rng.uniform(0.1, 0.9, 2).astype(np.float32))
                imgs.append(obs["image"])
                masks.append(info["species_mask"])
    finally:
        env.close()
    return np.stack(imgs[:n]), np.stack(masks[:n])
