"""A distractor region of the bed: leaves in the wind, whose appearance cannot be predicted from the camera pose.

The region is a box of the bed, ``(x0, y0, x1, y1)`` in *bed fractions* (0 = the bed's -x / -y edge, 1 = its
+x / +y edge; the bed is ``BED_SIZE`` = 0.75 m square, world x/y in metres). Every pixel whose viewing ray meets
the soil plane (z = 0) inside the box shows, at every render, a fresh random set of leaves (green ellipses of
random size, shade, place and angle) over a randomly dimmed copy of the rendered pixels: what the camera sees
there is new at every visit, like foliage moving in the wind, so no forward model can predict it from the
motor command. Outside the box the frame is the rendered one, unchanged.

``DistractorRegion.apply(rgb, position, rotation, fov, rng)`` returns the frame and the (H, W) bool mask of
distractor pixels; ``in_region(position, rotation)`` tells whether the optical axis meets the soil inside the
box (the camera "looks into" the distractor).
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

from sim.arms import BED_SIZE

__all__ = ["DistractorRegion", "parse_region"]


def parse_region(value: object) -> tuple[float, float, float, float]:
    """``(x0, y0, x1, y1)`` bed fractions from a 4-sequence or a ``"x0,y0,x1,y1"`` string.

    Raises ``ValueError`` (one line, with the fix) when it is not four numbers, leaves the bed [0, 1] or has
    zero size."""
    parts = value.replace(" ", "").split(",") if isinstance(value, str) else list(value)  # type: ignore[call-overload]
    try:
        box = tuple(float(v) for v in parts)
    except (TypeError, ValueError):
        box = ()
    if len(box) != 4 or not all(math.isfinite(v) for v in box):
        raise ValueError(f"distractor region {value!r} is not four numbers x0,y0,x1,y1 (bed fractions, e.g. "
                         "0.6,0,1,1)")
    x0, y0, x1, y1 = box
    if min(box) < 0.0 or max(box) > 1.0:
        raise ValueError(f"distractor region {value!r} leaves the bed; every value must be in [0, 1] (bed "
                         "fractions, e.g. 0.6,0,1,1)")
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"distractor region {value!r} has zero size; it needs x0 < x1 and y0 < y1 (e.g. "
                         "0.6,0,1,1)")
    return (x0, y0, x1, y1)


@dataclasses.dataclass(frozen=True)
class DistractorRegion:
    """The box ``(x0, y0, x1, y1)`` in bed fractions (validated by ``parse_region``); ``leaves``: mean leaf
    count per image-sized area of distractor pixels."""

    box: tuple[float, float, float, float]
    leaves: float = 40.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "box", parse_region(self.box))

    @property
    def world_box(self) -> np.ndarray:
        """(4,) float64 metres: x0, y0, x1, y1 in the world frame."""
        return np.asarray(self.box, np.float64) * BED_SIZE

    def _inside(self, xy: np.ndarray) -> np.ndarray:
        x0, y0, x1, y1 = self.world_box
        return (xy[..., 0] >= x0) & (xy[..., 0] <= x1) & (xy[..., 1] >= y0) & (xy[..., 1] <= y1)

    @staticmethod
    def ground_points(position: np.ndarray, rotation: np.ndarray, size: int, fov: float) -> np.ndarray:
        """(size, size, 2) world x/y (metres) where each pixel's ray meets z = 0; NaN where it does not.

        ``position`` (3,) and ``rotation`` (3, 3) are the camera pose of ``sim.camera`` (columns right, up,
        backward); ``fov`` the vertical field of view in degrees (square image)."""
        t = math.tan(math.radians(fov) / 2.0)
        c = (np.arange(size) + 0.5) / size * 2.0 - 1.0  # ndc, left -> right and (negated) top -> bottom
        u, v = np.meshgrid(c * t, -c * t)
        d = u[..., None] * rotation[:, 0] + v[..., None] * rotation[:, 1] - rotation[:, 2]  # (H, W, 3)
        with np.errstate(divide="ignore", invalid="ignore"):
            s = -float(position[2]) / d[..., 2]
        s = np.where(s > 0, s, np.nan)
        return position[:2] + s[..., None] * d[..., :2]

    def in_region(self, position: np.ndarray, rotation: np.ndarray) -> bool:
        """Whether the optical axis meets the soil inside the box."""
        d = -rotation[:, 2]
        if d[2] >= 0:
            return False
        xy = position[:2] + (-float(position[2]) / d[2]) * d[:2]
        return bool(self._inside(xy))

    def mask(self, position: np.ndarray, rotation: np.ndarray, size: int, fov: float) -> np.ndarray:
        """(size, size) bool: the pixels that look at the box."""
        xy = self.ground_points(np.asarray(position, np.float64), np.asarray(rotation, np.float64), size, fov)
        return self._inside(np.nan_to_num(xy, nan=-1e9))

    def apply(self, rgb: np.ndarray, position: np.ndarray, rotation: np.ndarray, fov: float,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(frame (H, W, 3) uint8 with fresh leaves over the box's pixels, mask (H, W) bool)."""
        size = rgb.shape[0]
        m = self.mask(position, rotation, size, fov)
        if not m.any():
            return rgb, m
        layer = (rgb.astype(np.float32) * rng.uniform(0.45, 0.9)).astype(np.uint8)
        rows, cols = np.nonzero(m)
        n = int(rng.poisson(self.leaves * m.mean()) + 1)
        scale = size / 64.0
        for _ in range(n):
            i = int(rng.integers(len(rows)))
            centre = (int(cols[i]), int(rows[i]))
            axes = (max(1, int(rng.uniform(3, 9) * scale)), max(1, int(rng.uniform(1.5, 4) * scale)))
            g = rng.uniform(90, 210)
            colour = (float(g * rng.uniform(0.3, 0.7)), float(g), float(g * rng.uniform(0.15, 0.45)))
            cv2.ellipse(layer, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1, cv2.LINE_AA)
        out = rgb.copy()
        out[m] = layer[m]
        return out, m
