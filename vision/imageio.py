"""Image and mask conversion shared by the torch and ONNX segmentation paths (numpy only, no torch).

``to_rgb8``: any image -> (H,W,3) uint8 RGB; ``to_mask``: any mask image -> (H,W) bool.
"""

from __future__ import annotations

import numpy as np

from microfarm import UsageError

__all__ = ["SupportError", "to_rgb8", "to_mask"]


class SupportError(UsageError, ValueError):
    """A support image or mask that cannot be used (the message says why)."""


def to_rgb8(image: np.ndarray) -> np.ndarray:
    """Any image -> (H,W,3) uint8 RGB. Gray/(H,W,1) replicated, RGBA drops alpha, uint16 scaled by 1/257,
    float taken as 0..1, bool as 0/1. Colour input is assumed to be RGB already."""
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise SupportError(f"expected an image (H,W), (H,W,1), (H,W,3) or (H,W,4), got shape {a.shape}")
    a = a[..., :3]
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if a.dtype == np.uint16:
        return ((a.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if a.dtype == bool:
        return a.astype(np.uint8) * 255
    if np.issubdtype(a.dtype, np.floating):
        return (np.clip(a, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    raise SupportError(f"unsupported image dtype {a.dtype}; use uint8, uint16 or float in [0, 1]")


def to_mask(mask: np.ndarray) -> np.ndarray:
    """Any mask image (gray or colour, any dtype) -> (H,W) bool, True where any channel is non-zero."""
    m = np.asarray(mask)
    if m.ndim == 3:
        m = (m[..., :3] != 0).any(axis=2) if m.shape[2] in (3, 4) else (m != 0).any(axis=2)
    if m.ndim != 2:
        raise SupportError(f"expected a mask (H,W) or (H,W,C), got shape {np.asarray(mask).shape}")
    return m != 0
