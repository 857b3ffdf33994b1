"""Overlays of ``microfarm segment``: a frame with its mask tinted and outlined, a colour per class (numpy, OpenCV)."""

from __future__ import annotations

import cv2
import numpy as np

from models.labels import PALETTE

__all__ = ["overlay"]


def overlay(rgb: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = PALETTE[0],
            labels: bool = False) -> np.ndarray:
    """(H,W,3) uint8 RGB with the mask tinted in ``color`` and outlined; returns RGB uint8. ``labels``: the mask
    holds labels 0..K, class k tinted in ``models.labels.PALETTE[k-1]`` (0/255 masks: one colour)."""
    out = rgb.copy()
    classes = [int(k) for k in np.unique(mask) if k] if labels else [1]
    for k in classes:
        c = PALETTE[(k - 1) % len(PALETTE)] if labels else color
        fg = mask == k if labels else mask > 0
        out[fg] = (0.55 * out[fg] + 0.45 * np.asarray(c)).astype(np.uint8)
        contours, _ = cv2.findContours(fg.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, c, 1)
    return out
