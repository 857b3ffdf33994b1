"""The downward camera: view/projection matrices from the camera link's frame, and rendering.

Images are (H, W, 3) uint8 RGB, row 0 at the top of the image; depth is (H, W) float32 metres along the
optical axis; the raw segmentation buffer is (H, W) int32 (uid + ((link + 1) << 24), -1 background).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pybullet as p

NEAR, FAR = 0.01, 3.0  # metres


@dataclasses.dataclass(frozen=True)
class CameraConfig:
    """size: square image side in pixels; fov: vertical field of view in degrees."""

    size: int = 64
    fov: float = 60.0


@dataclasses.dataclass
class Frame:
    """One rendered view. rgb (H,W,3) uint8; depth (H,W) float32 metres or None; seg (H,W) int32 or None."""

    rgb: np.ndarray
    depth: np.ndarray | None = None
    seg: np.ndarray | None = None


class Camera:
    """Renders a PyBullet client's scene with the TinyRenderer (CPU) from a given camera pose."""

    def __init__(self, client: int, config: CameraConfig) -> None:
        self.client = client
        self.config = config
        self.projection = p.computeProjectionMatrixFOV(config.fov, 1.0, NEAR, FAR, physicsClientId=client)

    @staticmethod
    def view_matrix(position: np.ndarray, rotation: np.ndarray) -> list[float]:
        """View matrix of a camera at ``position`` (3,) looking along -z of ``rotation`` (3,3), image up = +y.

        For the gantry the link frame is the world frame, so image up is world +y (north) and image right
        is world +x; for the arm the image turns with the arm.
        """
        forward = -rotation[:, 2]
        up = rotation[:, 1]
        target = position + forward
        return p.computeViewMatrix(position.tolist(), target.tolist(), up.tolist())

    def render(self, position: np.ndarray, rotation: np.ndarray, *, segmentation: bool = False,
               depth: bool = False, light: dict | None = None) -> Frame:
        """Render the view from ``position``/``rotation``; ``light`` is extra getCameraImage kwargs."""
        s = self.config.size
        flags = p.ER_SEGMENTATION_MASK_OBJECT_AND_LINKINDEX if segmentation else p.ER_NO_SEGMENTATION_MASK
        _, _, rgba, zbuf, seg = p.getCameraImage(
            s, s, self.view_matrix(position, rotation), self.projection, renderer=p.ER_TINY_RENDERER,
            flags=flags, physicsClientId=self.client, **(light or {}))
        rgb = np.asarray(rgba, np.uint8).reshape(s, s, 4)[:, :, :3].copy()
        frame = Frame(rgb)
        if depth:
            z = np.asarray(zbuf, np.float32).reshape(s, s)
            frame.depth = (FAR * NEAR / (FAR - (FAR - NEAR) * z)).astype(np.float32)
        if segmentation:
            frame.seg = np.asarray(seg, np.int32).reshape(s, s)
        return frame
