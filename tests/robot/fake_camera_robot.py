"""A fake camera robot for the curiosity tests: its image is a smooth synthetic function of its position."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.autoencoder import AutoencoderConfig, ConvAutoencoder
from models.weights import save_weights
from robot.base import Feature, Robot

TINY_AE = AutoencoderConfig(size=16, color="gray", channels=(4, 4), code_size=8)


class FakeCameraRobot(Robot):
    """2 motors in [0, 1]; a size x size RGB image of a pattern shifted by the position (a camera panning
    over a textured plane). ``interrupt_at``: send SIGINT to this process on that call of ``send_action``."""

    name = "fake"

    def __init__(self, size: int = 16, interrupt_at: int | None = None, path_frames: bool = False) -> None:
        super().__init__()
        self.size, self.interrupt_at, self.path_frames = size, interrupt_at, path_frames
        self.pos = np.full(2, 0.5, np.float32)
        self.calls = 0
        self.path_observations: list[dict[str, np.ndarray]] = []
        g = np.arange(size) / size
        self.yy, self.xx = np.meshgrid(g, g, indexing="ij")

    @property
    def observation_features(self) -> dict[str, Feature]:
        return {"image": Feature((self.size, self.size, 3), "uint8", 0, 255),
                "motor": Feature((2,), "float32", 0.0, 1.0, ("x", "y"))}

    @property
    def action_features(self) -> dict[str, Feature]:
        return {"motor": Feature((2,), "float32", 0.0, 1.0, ("x", "y"))}

    def image_at(self, pos: np.ndarray) -> np.ndarray:
        u, v = self.xx + 2.0 * pos[0], self.yy + 2.0 * pos[1]
        chans = [np.sin(3.0 * u + 2.0 * v), np.cos(4.0 * v - 1.5 * u), np.sin(2.0 * u) * np.cos(2.5 * v)]
        return np.clip(127.5 + 120.0 * np.stack(chans, -1), 0, 255).astype(np.uint8)

    def _connect(self) -> None:
        pass

    def _disconnect(self) -> None:
        pass

    def _get_observation(self) -> dict[str, np.ndarray]:
        return {"image": self.image_at(self.pos), "motor": self.pos.copy()}

    def _send_action(self, action: np.ndarray) -> None:
        self.calls += 1
        if self.interrupt_at is not None and self.calls == self.interrupt_at:
            os.kill(os.getpid(), signal.SIGINT)
        start, self.pos = self.pos, action.astype(np.float32).copy()
        steps = np.linspace(0, 1, 4)[1:] if self.path_frames else np.ones(1)
        self.path_observations = [{"motor": (start + s * (self.pos - start)).astype(np.float32),
                                   "image": self.image_at(start + s * (self.pos - start))} for s in steps]


def tiny_encoder(path: Path, seed: int = 0) -> Path:
    """Save an untrained tiny autoencoder (16x16 gray, code 8) at ``path``; returns it."""
    torch.manual_seed(seed)
    ae = ConvAutoencoder(TINY_AE)
    return save_weights(path, ae, TINY_AE.to_dict(), kind="autoencoder")


def tiny_explore_config(tmp_path: Path, out: str, **kw: object) -> Any:
    """A fast ``ExploreConfig`` for tests (tiny MLPs, memory 12, 40 steps, the tiny encoder) writing to
    ``tmp_path / out``; ``kw`` overrides any field."""
    from robot.explore import ExploreConfig

    base = dict(steps=40, memory_size=12, hidden=[24, 24], test_size=50, goal_samples=30, n_goals=4,
                encoder=tiny_encoder(tmp_path / "enc.safetensors"), out=tmp_path / out, checkpoint_every=10,
                export=False, plots=False, progress=False, threads=1, lr=0.05, forget_window=5)
    base.update(kw)
    return ExploreConfig(**base)  # type: ignore[arg-type]
