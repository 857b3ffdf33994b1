"""`SimFeed`: an endless camera feed from the gantry sweeping the bed (the `sim` source of `microfarm segment`)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from sim.envs import GantryCameraEnv


def sweep(step: float = 0.01, rows: int = 5) -> np.ndarray:
    """A lawnmower path over the bed in normalised gantry motor coordinates: (N, 2) float32."""
    xs = np.arange(0.0, 1.0 + 1e-9, step)
    path = []
    for r, y in enumerate(np.linspace(0.1, 0.9, rows)):
        for x in xs[:: 1 if r % 2 == 0 else -1]:
            path.append((x, y))
    return np.asarray(path, np.float32)


class SimFeed:
    """Iterate (H, W, 3) uint8 RGB frames from the gantry camera moving along ``sweep()`` forever.

    size: frame side in pixels; seed: the bed layout (``scene_seed``) and the env's reset seed.
    """

    def __init__(self, size: int = 256, seed: int = 0, step: float = 0.01) -> None:
        self.env = GantryCameraEnv(size=size, scene_seed=seed)
        self.env.reset(seed=seed)
        self.path = sweep(step)

    def __iter__(self) -> Iterator[np.ndarray]:
        while True:
            for motor in self.path:
                obs, *_ = self.env.step(motor)
                yield obs["image"]

    def close(self) -> None:
        self.env.close()
