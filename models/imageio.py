"""Image conversion shared by the torch and ONNX paths (numpy only: safe on the torch-free runtime path)."""

from __future__ import annotations

import numpy as np

__all__ = ["to_rgb8"]


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
