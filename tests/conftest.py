"""Shared test set-up: run from the repo root so `microfarm`, `launch.py` and the packages import."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("MPLBACKEND", "Agg")


def write_support(folder: Path, h: int = 48, w: int = 64) -> str:
    """Write a support example into ``folder``: img.png (h x w, soil left, a green plant on the right half) and
    mask.png (255 on the plant); returns the ``IMG:MASK`` argument of ``--support``."""
    import cv2
    import numpy as np

    img = np.zeros((h, w, 3), np.uint8)
    img[:, w // 2:] = (40, 180, 40)
    mask = np.zeros((h, w), np.uint8)
    mask[:, w // 2:] = 255
    cv2.imwrite(str(folder / "img.png"), img)
    cv2.imwrite(str(folder / "mask.png"), mask)
    return f"{folder / 'img.png'}:{folder / 'mask.png'}"
