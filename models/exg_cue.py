"""Excess-green cues chosen on the support: how far out its masks are drawn, and which plants by their width.

numpy + OpenCV only (``models.cue_fusion`` uses it in the torch and the ONNX pipelines).

ExG + Otsu (``exg_relative`` > 0) marks every green pixel and stops at the green. Two things a support's masks
say that it does not:

- **Where the labeller draws the edge.** Hand-made masks often run a pixel or two outside the green (the brush
  covers a leaf's rim and its shaded edge and draws a grass blade wider than it is). ``halo`` r: "green within r
  pixels", exg_rel max-filtered over a disc of radius r (``exg_near``).
- **Which of the plants.** "The grass, not the broad-leaved crop" or "the big crop, not the seedlings around it"
  is often a matter of width. ``side`` "broad": the green pixels that an octagon of radius ``width`` fits around
  (the morphological opening of the ExG mask by alternating 3x3 cross and square steps, far cheaper than one
  large elliptical kernel at the larger radii); "thin": the other green pixels; "all": every green pixel.

``choose_cue`` takes the combination (of ``HALO_RADII`` x (all, or thin / broad at each of ``WIDTH_RADII``):
36 in all; with ``widths=False`` only "all": 4) whose cue has the highest IoU on the support's masks (pixels
pooled over the shots; ties to the earlier, "all" and smaller radii first). Nothing else is taken from the shots,
so that IoU is a fair estimate of the cue's IoU elsewhere, optimistic for the choice: with one shot the pipeline
chooses the halo alone (36 choices on one shot let a cauliflower's "broad" excess green pass the one-shot check on
CWF-788 and cost 0.01 IoU there).

Radii are pixels of an image whose long side is at most ``REFERENCE_SIDE`` (512 px, the size ``eval-real`` scores
at); on a larger image every radius grows in proportion (``pixels``): a labeller's brush and a grass blade are
more pixels wide on a 1920-px camera, and the choice is made, and the cue applied, at each image's own scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["HALO_RADII", "WIDTH_RADII", "SIDES", "REFERENCE_SIDE", "pixels", "exg_near", "ExgCue", "choose_cue"]

HALO_RADII = (0, 1, 2, 3)  # pixels at REFERENCE_SIDE: how far outside the green the support's labeller may draw
WIDTH_RADII = (4, 8, 12, 16)  # pixels at REFERENCE_SIDE: the disc radius that tells broad plants from thin ones
REFERENCE_SIDE = 512  # long side (px) up to which radii are pixels; above it they grow in proportion
SIDES = ("all", "thin", "broad")
_OFF = -2.0  # exg_rel given to green pixels of the side not asked for (sigmoid(-2) = 0.12)


def pixels(radius: int, shape: tuple[int, ...]) -> int:
    """A radius of ``HALO_RADII`` / ``WIDTH_RADII`` in pixels of an image of (H, W, ...) ``shape``: unchanged up to
    a long side of ``REFERENCE_SIDE``, scaled by long side / ``REFERENCE_SIDE`` (rounded) above it."""
    return int(round(radius * max(1.0, max(shape[:2]) / REFERENCE_SIDE)))


def _disc(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def exg_near(exg: np.ndarray, radius: int) -> np.ndarray:
    """(H,W) float32 ``exg_relative`` max-filtered over a disc of ``radius`` pixels (> 0 where a plant pixel of
    ExG + Otsu lies within ``radius``); radius 0 returns it unchanged."""
    if radius <= 0:
        return exg
    return cv2.dilate(np.asarray(exg, np.float32), _disc(radius))


_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
_SQUARE = np.ones((3, 3), np.uint8)


def _broad(exg: np.ndarray, width: int) -> np.ndarray:
    """(H,W) bool: the green pixels (exg > 0) covered by an octagon of radius ``width`` that lies inside the green
    (opening by ``width`` alternating 3x3 cross / square erosions, then the same dilations)."""
    steps = [_CROSS if i % 2 == 0 else _SQUARE for i in range(width)]
    m = (exg > 0).astype(np.uint8)
    for k in steps:
        m = cv2.erode(m, k)
    for k in reversed(steps):
        m = cv2.dilate(m, k)
    return m > 0


def _side(exg: np.ndarray, side: str, broad: np.ndarray | None) -> np.ndarray:
    """exg_rel with the green pixels of the other side pushed to at most ``_OFF``; broad: ``_broad(exg, width)``
    (unused, and may be None, for side "all")."""
    if side == "all":
        return exg
    keep = broad if side == "broad" else ~broad
    return np.where(keep, exg, np.minimum(exg, _OFF)).astype(np.float32)


@dataclass(frozen=True)
class ExgCue:
    """One excess-green cue: ``halo`` pixels outside the green, of the plants of ``side`` (all / thin / broad
    at ``width`` pixels; width 0 with "all"); radii at ``REFERENCE_SIDE`` (``pixels`` converts them)."""

    halo: int = 0
    side: str = "all"
    width: int = 0

    def map(self, exg: np.ndarray) -> np.ndarray:
        """(H,W) float32 of a frame's (H,W) float32 ``exg_relative``: > 0 where the cue marks the pixel (exg_rel
        units: 10 x excess green above the frame's Otsu threshold)."""
        broad = None if self.side == "all" else _broad(exg, pixels(self.width, exg.shape))
        return exg_near(_side(exg, self.side, broad), pixels(self.halo, exg.shape))

    def report(self) -> dict[str, object]:
        """For summary.json: {"halo", "side", "width"} (radii at ``REFERENCE_SIDE``)."""
        return {"halo": self.halo, "side": self.side, "width": self.width}


def _pooled_iou(preds: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> float:
    """IoU of (H,W) bool predictions against (H,W) bool masks, intersections and unions summed over the shots."""
    inter = sum(int(np.count_nonzero(p & m)) for p, m in zip(preds, masks, strict=True))
    union = sum(int(np.count_nonzero(p | m)) for p, m in zip(preds, masks, strict=True))
    return inter / union if union else 1.0


def choose_cue(exgs: Sequence[np.ndarray], masks: Sequence[np.ndarray], widths: bool = True) -> tuple[ExgCue, float]:
    """The ``ExgCue`` whose map > 0 has the highest IoU over the support's (H,W) exg_rel maps and (H,W) bool masks
    (pixels pooled over the shots, each map at its shot's own scale: ``pixels``), and that IoU; ``widths=False``:
    side "all" only (the halo alone)."""
    masks = [np.asarray(m, bool) for m in masks]
    best, best_iou = ExgCue(), -1.0
    for width in (0, *(WIDTH_RADII if widths else ())):  # width 0: side "all"
        broads = [_broad(e, pixels(width, e.shape)) if width else None for e in exgs]  # one opening per shot
        for side in SIDES[1:] if width else SIDES[:1]:
            sided = [_side(e, side, b) for e, b in zip(exgs, broads, strict=True)]
            for halo in HALO_RADII:
                iou = _pooled_iou([exg_near(e, pixels(halo, e.shape)) > 0 for e in sided], masks)
                if iou > best_iou:
                    best, best_iou = ExgCue(halo, side, width), iou
    return best, best_iou
