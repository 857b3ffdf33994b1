"""Image and mask conversion shared by the torch and ONNX segmentation paths (numpy only, no torch).

``to_rgb8``: any image -> (H,W,3) uint8 RGB; ``to_mask``: any mask image -> (H,W) bool.
"""

from __future__ import annotations

import numpy as np

from microfarm_toolkit import UsageError
from models.imageio import to_mask as _to_mask
from models.imageio import to_rgb8 as _to_rgb8

__all__ = ["SupportError", "to_rgb8", "to_mask"]


class SupportError(UsageError, ValueError):
    """A support image or mask that cannot be used (the message says why)."""


def to_rgb8(image: np.ndarray) -> np.ndarray:
    """Any image -> (H,W,3) uint8 RGB (``models.imageio.to_rgb8``); SupportError for a non-image."""
    return _to_rgb8(image, SupportError)


def to_mask(mask: np.ndarray) -> np.ndarray:
    """Any mask image (gray or colour, any dtype) -> (H,W) bool (``models.imageio.to_mask``); SupportError for a
    non-mask."""
    return _to_mask(mask, SupportError)
