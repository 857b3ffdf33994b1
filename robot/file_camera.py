"""`FileCameraRobot`: a camera robot whose frames come from a folder of images (recorded frames, replayed).

``microfarm deploy --robot files:DIR`` runs a bundle on recorded frames, without the robot and without the
simulator: each observation's image is the next image of DIR in file-name order (after the last one, the first
again), and its motor position is the last command sent (the frames do not depend on it: a replay, not a camera
that moves; the start position is 0.5 on every axis). Every frame has the first frame's size (others are resized
to it) or, with ``size``, is resized to size x size. numpy + OpenCV only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from robot.base import Feature, Robot, RobotError

__all__ = ["FileCameraRobot", "FrameFolderError", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class FrameFolderError(RobotError, ValueError):
    """No folder, no such folder, no image in it, or an image that cannot be read."""


class FileCameraRobot(Robot):
    """Frames from a folder of images, in name order, round and round; ``dof`` motor axes that echo the command.

    ``frame_name``: the file of the last observation (``None`` before the first); ``frames``: all files, in order.
    """

    name = "files"

    def __init__(self, folder: str | Path | None = None, size: int | None = None, dof: int = 2) -> None:
        super().__init__()
        if folder is None or str(folder) == "":
            raise FrameFolderError("the files robot needs a folder of images: --robot files:DIR")
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FrameFolderError(f"frame folder {str(self.folder)!r} does not exist or is not a folder; check the "
                                   "path (--robot files:DIR)")
        self.frames = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not self.frames:
            raise FrameFolderError(f"frame folder {str(self.folder)!r} has no images ({', '.join(IMAGE_SUFFIXES)})")
        if size is not None and size < 1:
            raise FrameFolderError(f"size must be >= 1, got {size}")
        if dof < 1:
            raise FrameFolderError(f"dof must be >= 1, got {dof}")
        first = self._read(self.frames[0])
        self.shape: tuple[int, int, int] = (size, size, 3) if size else first.shape  # type: ignore[assignment]
        self.dof, self.index, self.frame_name = dof, 0, None
        self.motor = np.full(dof, 0.5, np.float32)

    @property
    def observation_features(self) -> dict[str, Feature]:
        return {"image": Feature(self.shape, "uint8", 0, 255),
                "motor": Feature((self.dof,), "float32", 0.0, 1.0)}

    @property
    def action_features(self) -> dict[str, Feature]:
        return {"motor": Feature((self.dof,), "float32", 0.0, 1.0)}

    def _read(self, path: Path) -> np.ndarray:
        import cv2

        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise FrameFolderError(f"cannot read frame {str(path)!r}; use PNG, JPEG, BMP, TIFF or WebP images")
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)

    def _connect(self) -> None:
        self.index = 0

    def _disconnect(self) -> None:
        pass

    def _get_observation(self) -> dict[str, np.ndarray]:
        import cv2

        path = self.frames[self.index % len(self.frames)]
        self.index += 1
        img = self._read(path)
        if img.shape != self.shape:
            img = cv2.resize(img, (self.shape[1], self.shape[0]), interpolation=cv2.INTER_AREA)
        self.frame_name = path.name
        return {"image": img, "motor": self.motor.copy()}

    def _send_action(self, action: np.ndarray) -> None:
        self.motor = action.astype(np.float32).copy()
