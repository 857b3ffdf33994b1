"""Training episodes from real field photographs (CWF-788 ``train/`` and ``validation/``; MIT, Li et al. 2019).

CWF-788's labels mark the crop (cauliflower) against everything else, weeds included. Three tasks come from them:

- ``crop``: the hand-made crop mask, exact;
- ``vegetation``: every plant pixel, a pseudo-label: the crop mask united with excess green + Otsu
  (``vision.baselines.exg_otsu(chromatic=False)``) of the photo, median-filtered (5x5) so that it is made of
  regions as a hand label is, not of single pixels;
- ``weed``: the other plants, a pseudo-label: ExG + Otsu minus the crop; pixels within ``RING`` pixels of the
  crop mask's edge are left out of the loss (``IGNORE``), where the two labels disagree most.

Episode ``i`` (deterministic from ``(seed, i)``): one task (``crop`` with probability 1/2, the others 1/4
each), K support photos and one query photo that each hold at least ``min_pixels`` of the task's pixels. Images
(H,W,3) uint8 RGB at the photos' size; masks (H,W) uint8 with 0, 1 and, in the query, ``IGNORE``. Support masks
hold 0 and 1 only (the ring counts as background there). Needs numpy and OpenCV only.

Peanut (CC BY-SA) is never read here: it is for evaluation and test-time examples only.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from microfarm_toolkit import UsageError
from vision.baselines import exg_otsu
from vision.real_data import RealSet

__all__ = ["RealEpisodes", "REAL_TRAIN_TASKS", "RING", "IGNORE"]

IGNORE = 2  # the loss's ignore value (``vision.train_data.IGNORE``)
RING = 4  # pixels around the crop's edge left out of the pseudo-labels' loss
REAL_TRAIN_TASKS: tuple[tuple[str, float], ...] = (("crop", 0.5), ("vegetation", 0.25), ("weed", 0.25))


class RealEpisodes:
    """Few-shot episodes from the training splits of CWF-788 (``splits``; never its ``test/``)."""

    def __init__(self, root: str | None = None, splits: Sequence[str] = ("train", "validation"),
                 min_pixels: int = 400, seed: int = 0) -> None:
        if "test" in splits:
            raise UsageError("CWF-788's test/ split is for evaluation only; train on train/ and validation/")
        self.set = RealSet("cwf788", root)
        self.items = [it for s in splits for it in self.set.items(s)]
        self.seed, self.min_pixels = int(seed), int(min_pixels)
        self._labels: dict[int, dict[str, np.ndarray]] = {}
        self._pools: dict[str, list[int]] | None = None

    def labels(self, j: int) -> dict[str, np.ndarray]:
        """Photo ``j``'s task masks, (H,W) uint8: 0/1 for ``crop``, ``vegetation``; 0/1/IGNORE for ``weed``."""
        if j not in self._labels:
            item = self.items[j]
            crop = self.set.masks(item)["crop"]
            green = cv2.medianBlur(exg_otsu(self.set.image(item), chromatic=False).astype(np.uint8), 5).astype(bool)
            ring = cv2.dilate(crop.astype(np.uint8), np.ones((2 * RING + 1,) * 2, np.uint8)).astype(bool) & ~crop
            weed = (green & ~crop & ~ring).astype(np.uint8)
            weed[ring & green] = IGNORE
            self._labels[j] = {"crop": crop.astype(np.uint8), "vegetation": (crop | green).astype(np.uint8),
                               "weed": weed}
        return self._labels[j]

    def pools(self) -> dict[str, list[int]]:
        """Task -> photos holding at least ``min_pixels`` of it (computed once, from every photo's labels)."""
        if self._pools is None:
            self._pools = {t: [] for t, _ in REAL_TRAIN_TASKS}
            for j in range(len(self.items)):
                for t, m in self.labels(j).items():
                    if int(np.count_nonzero(m == 1)) >= self.min_pixels:
                        self._pools[t].append(j)
        return self._pools

    def episode(self, i: int, k: int) -> tuple[str, list[np.ndarray], list[np.ndarray], np.ndarray, np.ndarray]:
        """Episode ``i`` with ``k`` shots -> (task, support images, support masks (0/1), query image, query mask)."""
        rng = np.random.default_rng([self.seed, int(i), 31])
        pools = self.pools()
        tasks = [t for t, _ in REAL_TRAIN_TASKS if len(pools[t]) > k]
        if not tasks:
            raise UsageError(f"CWF-788 has fewer than {k + 1} photos with >= {self.min_pixels} pixels of any task")
        p = np.array([w for t, w in REAL_TRAIN_TASKS if t in tasks])
        task = tasks[int(rng.choice(len(tasks), p=p / p.sum()))]
        frames = [int(j) for j in rng.choice(pools[task], size=k + 1, replace=False)]
        images = [self.set.image(self.items[j]) for j in frames]
        masks = [self.labels(j)[task] for j in frames]
        sup_masks = [(m == 1).astype(np.uint8) for m in masks[:k]]
        return task, images[:k], sup_masks, images[k], masks[k]
