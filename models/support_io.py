"""Support files for ``microfarm segment`` and ``microfarm deploy``: ``--support IMG:MASK`` pairs and ``--classes``
read into RGB images and label masks (``models.labels``). numpy + OpenCV only (Pillow lazily, for palette PNGs).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from models.labels import ClassSpec, SupportLabels, interpret_masks

__all__ = ["read_mask", "load_support_files"]


def read_mask(path: str | Path, indices: bool = True, error: type[Exception] = ValueError) -> np.ndarray:
    """A mask file as stored: gray (H,W) uint8/uint16 values, colour (H,W,3) RGB (OpenCV reads BGR: converted),
    alpha dropped. An indexed (palette) PNG gives its label indices (H,W) uint8 with ``indices`` (needs Pillow),
    its palette colours otherwise. ``error`` with one line if missing or unreadable."""
    p = Path(path)
    if not p.is_file():
        raise error(f"image {str(path)!r} does not exist; check the path")
    with open(p, "rb") as f:
        head = f.read(26)
    if indices and len(head) == 26 and head[:8] == b"\x89PNG\r\n\x1a\n" and head[25] == 3:
        try:
            from PIL import Image
        except ImportError:
            raise error(f"mask {str(path)!r} is an indexed (palette) PNG: reading its label values needs Pillow "
                        "(pip install pillow); or save it as a gray PNG, or give --classes with its colours") from None
        with Image.open(p) as im:
            return np.array(im, np.uint8)
    img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise error(f"cannot read image {str(path)!r}; use a PNG, JPEG, BMP or TIFF file")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim == 3:
        img = cv2.cvtColor(np.ascontiguousarray(img[..., :3]), cv2.COLOR_BGR2RGB)
    return img


def load_support_files(specs: Sequence[str], read_image: Callable[[str], np.ndarray],
                       legend: Sequence[ClassSpec] | None = None, resize_masks: bool | None = False,
                       error: type[Exception] = ValueError) -> tuple[list[np.ndarray], SupportLabels]:
    """``IMG:MASK`` pairs -> (RGB images (H,W,3) uint8, the masks read as labels: ``SupportLabels``).

    read_image: path -> (H,W,3) uint8 RGB; legend: the ``--classes`` legend (None: binary or indexed masks by their
    values); resize_masks: resize a mask of another size than its image (nearest neighbour, labels kept) instead
    of refusing it (None: the command has no --resize-masks). ``error`` with one line for a malformed pair, a
    mask of the wrong size, an empty mask or a support that ``models.labels.interpret_masks`` refuses; warns for
    an all-foreground binary mask.
    """
    images, raw = [], []
    indices = legend is None or all(isinstance(c.key, int) for c in legend)
    for spec in specs:
        if ":" not in spec:
            raise error(f"--support {spec!r} must be IMG:MASK (an image path, a colon, a mask path)")
        img_path, mask_path = spec.rsplit(":", 1)
        img, mask = read_image(img_path), read_mask(mask_path, indices, error)
        if mask.shape[:2] != img.shape[:2]:
            if not resize_masks:
                raise error(f"mask {mask_path!r} is {mask.shape[1]}x{mask.shape[0]} but its image is "
                            f"{img.shape[1]}x{img.shape[0]}" + ("" if resize_masks is None else
                                                               "; fix it or pass --resize-masks"))
            mask = cv2.resize(mask, img.shape[1::-1], interpolation=cv2.INTER_NEAREST)
        images.append(img)
        raw.append(mask)
    paths = [repr(s.rsplit(":", 1)[1]) for s in specs]
    for m, p in zip(raw, paths, strict=True):
        if not np.any(m):
            raise error(f"mask {p} is empty; mark the thing to segment with non-zero pixels")
    labels = interpret_masks(raw, legend, error, names=[f"mask {p}" for p in paths])
    for m, p in zip(labels.masks, paths, strict=True):
        if labels.binary and m.all():
            warnings.warn(f"mask {p} is all foreground: the negative guide has nothing to learn from", stacklevel=2)
    return images, labels
