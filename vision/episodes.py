"""Segmentation datasets (``microfarm render --task segmentation``, docs/CONTRACTS.md) and few-shot episodes.

An episode: a class (species id) from the allowed folds, K support frames and 1 query frame that each hold
at least ``min_pixels`` pixels of that class, with binary masks of that class. Sampling is deterministic:
episode ``i`` of a sampler with seed ``s`` depends on ``(s, i)`` only. Images are (H,W,3) uint8 RGB, masks
(H,W) uint8 in {0, 1}. ``EpisodeSampler(augment=True)`` applies ``vision.augment.strong_augment`` in its
"light" mode (zoom, right-angle rotations, flips, mild colour). ``EpisodeSampler.absent_frame(i, c)`` draws a
frame *without* class ``c`` (no pixel of it): a query whose answer is "nothing here", as most frames of a camera
feed are for the thing asked for. Needs numpy and OpenCV only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from microfarm_toolkit import UsageError
from vision.augment import resize_pair, strong_augment

__all__ = ["SegmentationDataset", "Episode", "EpisodeSampler", "resize_pair"]


class SegmentationDataset:
    """A rendered segmentation dataset: ``index.json`` + ``rgb/``, ``species/``, ``instance/`` PNGs."""

    def __init__(self, root: str | Path, cache: bool = True) -> None:
        self.root = Path(root)
        index = self.root / "index.json"
        if not index.is_file():
            raise UsageError(f"{str(self.root)!r} is not a dataset: no index.json (render one with "
                             "`microfarm render --task segmentation`)")
        meta = json.loads(index.read_text())
        if meta.get("task") != "segmentation":
            raise UsageError(f"{str(index)!r} is a {meta.get('task')!r} dataset, expected 'segmentation'")
        self.meta = meta
        self.species: list[dict] = list(meta.get("species", []))
        self.folds: list[list[int]] = [list(map(int, f)) for f in meta.get("folds", [])]
        self.frames: list[dict] = list(meta["frames"])
        self.pixels = [{int(k): int(v) for k, v in f.get("species_pixels", {}).items()} for f in self.frames]
        self._cache: dict[tuple[str, int], np.ndarray] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.frames)

    def _read(self, kind: str, i: int) -> np.ndarray:
        key = (kind, i)
        if self._cache is not None and key in self._cache:
            return self._cache[key]
        path = self.root / self.frames[i][kind]
        flag = cv2.IMREAD_COLOR if kind == "rgb" else cv2.IMREAD_UNCHANGED
        a = cv2.imread(str(path), flag)
        if a is None:
            raise UsageError(f"cannot read {str(path)!r} (dataset {str(self.root)!r} is incomplete)")
        if kind == "rgb":
            a = cv2.cvtColor(a, cv2.COLOR_BGR2RGB)
        if self._cache is not None:
            self._cache[key] = a
        return a

    def image(self, i: int) -> np.ndarray:
        """Frame ``i`` as (H,W,3) uint8 RGB."""
        return self._read("rgb", i)

    def species_mask(self, i: int) -> np.ndarray:
        """Frame ``i``'s species map (H,W) uint8: 0 = no plant, k = species id."""
        return self._read("species", i)

    def class_mask(self, i: int, class_id: int) -> np.ndarray:
        """(H,W) uint8 in {0, 1}: 1 where frame ``i`` shows species ``class_id``."""
        return (self.species_mask(i) == class_id).astype(np.uint8)

    def fold_classes(self, folds: Sequence[int]) -> list[int]:
        """Species ids in the given folds (sorted)."""
        bad = [f for f in folds if not 0 <= f < len(self.folds)]
        if bad:
            raise UsageError(f"fold(s) {bad} do not exist; this dataset has folds 0..{len(self.folds) - 1}")
        return sorted({c for f in folds for c in self.folds[f]})

    def frames_with(self, class_id: int, min_pixels: int = 1) -> list[int]:
        """Indices of frames holding at least ``min_pixels`` pixels of ``class_id``."""
        return [i for i, px in enumerate(self.pixels) if px.get(class_id, 0) >= min_pixels]

    def frames_without(self, class_id: int) -> list[int]:
        """Indices of frames with no pixel of ``class_id``."""
        return [i for i, px in enumerate(self.pixels) if px.get(class_id, 0) == 0]


@dataclass
class Episode:
    """One few-shot task. images (H,W,3) uint8 RGB; masks (H,W) uint8 {0,1}; ``frames`` = dataset indices."""

    class_id: int
    support_images: list[np.ndarray]
    support_masks: list[np.ndarray]
    query_image: np.ndarray
    query_mask: np.ndarray
    frames: list[int]


class EpisodeSampler:
    """Deterministic few-shot episodes from a ``SegmentationDataset``.

    ``shots`` is K, or (kmin, kmax) to draw K per episode. ``size``: output side length (None keeps the
    dataset's size; ``augment=True`` needs a size). Classes with fewer than K+1 usable frames are skipped.
    """

    def __init__(self, dataset: SegmentationDataset, folds: Sequence[int], shots: int | tuple[int, int] = 1,
                 min_pixels: int = 64, seed: int = 0, size: int | None = None, augment: bool = False) -> None:
        self.dataset = dataset
        self.kmin, self.kmax = (shots, shots) if isinstance(shots, int) else (int(shots[0]), int(shots[1]))
        if not 1 <= self.kmin <= self.kmax:
            raise UsageError(f"shots must be >= 1 (got {shots})")
        if augment and size is None:
            raise UsageError("augment=True needs an output size")
        self.seed, self.size, self.augment = int(seed), size, augment
        self.min_pixels = int(min_pixels)
        self.pools = {c: dataset.frames_with(c, self.min_pixels) for c in dataset.fold_classes(folds)}
        self.classes = [c for c, frames in self.pools.items() if len(frames) >= self.kmax + 1]
        if not self.classes:
            raise UsageError(f"no class of folds {list(folds)} has {self.kmax + 1} frames with >= "
                             f"{self.min_pixels} pixels; render more frames or lower min_pixels")
        self._absent: dict[int, list[int]] = {}

    def absent_frame(self, index: int, class_id: int) -> int | None:
        """A dataset frame without ``class_id`` for episode ``index`` (deterministic; None if every frame has it)."""
        if class_id not in self._absent:
            self._absent[class_id] = self.dataset.frames_without(class_id)
        pool = self._absent[class_id]
        if not pool:
            return None
        return pool[int(np.random.default_rng([self.seed, int(index), 7]).integers(len(pool)))]

    def episode(self, index: int) -> Episode:
        """Episode number ``index`` (the same for the same seed and index)."""
        rng = np.random.default_rng([self.seed, int(index)])
        c = self.classes[int(rng.integers(len(self.classes)))]
        k = int(rng.integers(self.kmin, self.kmax + 1))
        frames = [int(i) for i in rng.choice(self.pools[c], size=k + 1, replace=False)]
        pairs = []
        for i in frames:
            img, msk = self.dataset.image(i), self.dataset.class_mask(i, c)
            if self.augment:
                assert self.size is not None
                img, msk = strong_augment(img, msk, rng, self.size, "light")
            elif self.size is not None:
                img, msk = resize_pair(img, msk, self.size)
            pairs.append((img, msk))
        sup = pairs[:k]
        return Episode(c, [p[0] for p in sup], [p[1] for p in sup], pairs[k][0], pairs[k][1], frames)
