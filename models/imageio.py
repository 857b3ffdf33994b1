"""Image and mask conversion shared by the torch and ONNX paths (numpy only: safe on the torch-free runtime path)."""

from __future__ import annotations

import numpy as np

__all__ = ["to_rgb8", "to_mask", "support_shot"]


def to_rgb8(image: np.ndarray, error: type[Exception] = ValueError) -> np.ndarray:
    """Any image -> (H,W,3) uint8 RGB. Gray/(H,W,1) replicated, RGBA drops alpha, uint16 scaled by 1/257,
    float taken as 0..1, bool as 0/1. Colour input is assumed to be RGB already.
    ``error``: the exception class raised for a shape or dtype that is not an image."""
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise error(f"expected an image (H,W), (H,W,1), (H,W,3) or (H,W,4), got shape {a.shape}")
    a = a[..., :3]
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if a.dtype == np.uint16:
        return ((a.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if a.dtype == bool:
        return a.astype(np.uint8) * 255
    if np.issubdtype(a.dtype, np.floating):
        return (np.clip(a, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    raise error(f"unsupported image dtype {a.dtype}; use uint8, uint16 or float in [0, 1]")


def to_mask(mask: np.ndarray, error: type[Exception] = ValueError) -> np.ndarray:
    """Any mask image (gray or colour, any dtype) -> (H,W) bool, True where any channel is non-zero."""
    m = np.asarray(mask)
    if m.ndim == 3:
        m = (m[..., :3] != 0).any(axis=2) if m.shape[2] in (3, 4) else (m != 0).any(axis=2)
    if m.ndim != 2:
        raise error(f"expected a mask (H,W) or (H,W,C), got shape {np.asarray(mask).shape}")
    return m != 0


def support_shot(image: np.ndarray, mask: np.ndarray, error: type[Exception] = ValueError
                 ) -> tuple[np.ndarray, np.ndarray]:
    """One support shot for a few-shot segmenter: (image (H,W,3) uint8 RGB, mask (H,W) bool), or ``error`` for
    a non-image, a mask of another size than its image, or an empty mask."""
    rgb, m = to_rgb8(image, error), to_mask(mask, error)
    if m.shape != rgb.shape[:2]:
        raise error(f"mask size {m.shape[1]}x{m.shape[0]} differs from its image's {rgb.shape[1]}x{rgb.shape[0]}")
    if not m.any():
        raise error("the mask is empty: mark the thing to segment with non-zero pixels")
    return rgb, m
