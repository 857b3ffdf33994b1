"""Overlays of ``microfarm segment``: a frame with its mask tinted and outlined, a colour per class (numpy, OpenCV)."""

from __future__ import annotations

import cv2
import numpy as np

from models.labels import PALETTE

__all__ = ["overlay"]


def overlay(rgb: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = PALETTE[0],
            labels: bool = False) -> np.ndarray:
    """(H,W,3) uint8 RGB with the mask tinted in ``color`` (0.55 frame + 0.45 colour, rounded) and outlined;
    returns RGB uint8. ``labels``: the mask holds labels 0..K, class k tinted in ``models.labels.PALETTE[k-1]``
    (0/255 masks: one colour). The tint is one ``cv2.transform`` over the class's bounding box and a masked
    copy (a 1080p frame: a few ms, where a float64 blend of the masked pixels took tens)."""
    out = np.array(rgb, np.uint8, order="C")  # a contiguous copy, whatever the frame's strides
    m = np.asarray(mask)
    if labels:
        present = np.bincount(m.ravel().astype(np.intp, copy=False))  # which labels occur (no sort, unlike unique)
        classes = [int(k) for k in np.flatnonzero(present) if k]
    else:
        classes = [1]
    for k in classes:
        c = PALETTE[(k - 1) % len(PALETTE)] if labels else color
        fg = ((m == k) if labels else (m > 0)).astype(np.uint8)
        x, y, w, h = cv2.boundingRect(fg)
        if w and h:
            tint = np.hstack([np.eye(3) * 0.55, 0.45 * np.asarray(c, np.float64).reshape(3, 1)])  # 3x4 affine
            box = (slice(y, y + h), slice(x, x + w))
            cv2.copyTo(cv2.transform(out[box], tint), fg[box], out[box])  # into out's box, in place
        contours, _ = cv2.findContours(fg, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, c, 1)
    return out
