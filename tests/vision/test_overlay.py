"""Overlays: the mask's pixels tinted 0.55 frame + 0.45 colour, its outline drawn, the rest of the frame untouched."""

from __future__ import annotations

import cv2
import numpy as np

from models.labels import PALETTE
from vision.overlay import overlay


def _frame_and_labels() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    labels = np.zeros((90, 120), np.uint8)
    cv2.circle(labels, (30, 40), 15, 1, -1)
    cv2.rectangle(labels, (70, 20), (110, 70), 2, -1)
    return rgb, labels


def test_overlay_tints_the_mask_and_leaves_the_rest():
    rgb, labels = _frame_and_labels()
    for mask, lab in ((np.where(labels > 0, 255, 0).astype(np.uint8), False), (labels, True)):
        out = overlay(rgb, mask, labels=lab)
        assert out.dtype == np.uint8 and out.shape == rgb.shape
        near = cv2.dilate((mask > 0).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        np.testing.assert_array_equal(out[~near], rgb[~near])  # away from the mask: the frame itself
        for k in (1, 2):
            inner = cv2.erode((labels == k).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
            colour = PALETTE[k - 1] if lab else PALETTE[0]
            want = 0.55 * rgb[inner] + 0.45 * np.asarray(colour)
            assert np.abs(out[inner] - want).max() <= 0.5 + 1e-6  # rounded to the nearest level
    np.testing.assert_array_equal(overlay(rgb, np.zeros_like(labels)), rgb)  # nothing marked: the frame
    np.testing.assert_array_equal(overlay(rgb, np.zeros_like(labels), labels=True), rgb)
