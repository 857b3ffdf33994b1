"""Goals in code space: where curiosity sends the robot.

- ``som``: the prototypes of a self-organising map (MiniSom, 3x3 for 9 goals; sigma 0.5, learning rate 0.5,
  100 iterations; the paper), trained on codes of images of the bed;
- ``kmeans``: k-means centroids (scipy ``kmeans2``, k-means++ init);
- ``dataset``: the codes of ``n`` randomly picked images;
- ``random``: no goals; the random-command baseline (every command uniform) — ``make_goals`` returns SOM
  prototypes anyway so that learning progress and plots stay defined, and the loop ignores them for commands.
All functions take codes (N, C) float32 and return goals (n, C) float32, deterministic given ``seed``.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["GOAL_KINDS", "som_goals", "kmeans_goals", "dataset_goals", "make_goals"]

GOAL_KINDS = ("som", "kmeans", "dataset", "random")


def _grid(n: int) -> tuple[int, int]:
    rows = int(math.isqrt(n))
    while n % rows:
        rows -= 1
    return rows, n // rows


def som_goals(codes: np.ndarray, n: int = 9, sigma: float = 0.5, learning_rate: float = 0.5,
              iterations: int = 100, seed: int = 0) -> np.ndarray:
    """Prototypes of a rows x cols SOM (3x3 for n=9) trained with ``train_random`` for ``iterations``."""
    from minisom import MiniSom

    rows, cols = _grid(n)
    data = np.asarray(codes, np.float64)
    som = MiniSom(rows, cols, data.shape[1], sigma=sigma, learning_rate=learning_rate, random_seed=seed)
    som.random_weights_init(data)
    som.train_random(data, iterations)
    return som.get_weights().reshape(rows * cols, -1).astype(np.float32)


def kmeans_goals(codes: np.ndarray, n: int = 9, seed: int = 0) -> np.ndarray:
    from scipy.cluster.vq import kmeans2

    centroids, _ = kmeans2(np.asarray(codes, np.float64), n, minit="++", seed=seed)
    return centroids.astype(np.float32)


def dataset_goals(codes: np.ndarray, n: int = 9, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(codes), size=n, replace=len(codes) < n)
    return np.asarray(codes, np.float32)[idx]


def make_goals(kind: str, codes: np.ndarray, n: int = 9, seed: int = 0) -> np.ndarray:
    """Goals (n, C) float32 of ``kind`` (see module doc) from codes (N, C)."""
    if len(codes) == 0:
        raise ValueError("no codes to build goals from")
    if kind in ("som", "random"):
        return som_goals(codes, n, seed=seed)
    if kind == "kmeans":
        return kmeans_goals(codes, n, seed=seed)
    if kind == "dataset":
        return dataset_goals(codes, n, seed=seed)
    raise ValueError(f"unknown goal kind {kind!r}; choose one of: {', '.join(GOAL_KINDS)}")
