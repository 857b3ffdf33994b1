"""Camera-feed sources for `microfarm segment`: webcam, video file, image, folder, glob, RTSP/HTTP, `sim`.

Every source yields ``(name, frame)`` pairs: ``name`` is the output stem (an image's file stem, or
``frame_<index>`` for video-like sources) and ``frame`` is (H,W,3) uint8 RGB. ``open_source`` raises
``UsageError`` (exit 2, one line) for a source that cannot be opened. The `sim` source comes from the
simulator through a string entry point, so `vision` never imports `sim` unless asked.
"""

from __future__ import annotations

import glob as globlib
import importlib
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from microfarm_toolkit import UsageError, quiet_stderr
from vision.imageio import to_rgb8

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
STREAM_PREFIXES = ("rtsp://", "rtsps://", "http://", "https://", "rtmp://", "udp://", "tcp://")
SIM_FEED = "sim.feed:SimFeed"


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read any image file as (H,W,3) uint8 RGB (gray, RGBA, 16-bit accepted); UsageError if unreadable."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"image {str(path)!r} does not exist; check the path")
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise UsageError(f"cannot read image {str(path)!r}; use a PNG, JPEG, BMP or TIFF file")
    if img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA)
    elif img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return to_rgb8(img)


class Source:
    """Base: iterate ``(name, rgb)``; ``length`` is the frame count when known (None: live)."""

    length: int | None = None
    fps: float = 0.0
    is_video = False
    live = False

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class ImageFiles(Source):
    """A list of image files; unreadable ones are skipped with a warning."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        self.length = len(paths)

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        for path in self.paths:
            try:
                yield path.stem, read_image(path)
            except UsageError as e:
                warnings.warn(f"skipping {path}: {e}", stacklevel=2)


class VideoCapture(Source):
    """A video file, a webcam index or a network stream, read with OpenCV.

    Every ``vid_stride``-th frame is yielded as ``frame_<index>`` (index in the source's own numbering).
    A live stream that drops is reopened up to ``retries`` times with exponential backoff.
    """

    is_video = True

    def __init__(self, target: str | int, vid_stride: int = 1, retries: int = 3, backoff: float = 0.5) -> None:
        self.target, self.vid_stride, self.retries, self.backoff = target, vid_stride, retries, backoff
        self.live = isinstance(target, int) or str(target).startswith(STREAM_PREFIXES)
        self.cap = self._open()
        self.fps = float(self.cap.get(cv2.CAP_PROP_FPS) or 0.0) or 30.0
        n = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.length = None if self.live or n <= 0 else (n + vid_stride - 1) // vid_stride

    def _open(self) -> cv2.VideoCapture:
        with quiet_stderr():  # FFmpeg logs its probing of a broken file on stderr
            cap = cv2.VideoCapture(self.target)
        if not cap.isOpened():
            if isinstance(self.target, int):
                raise UsageError(f"no webcam at index {self.target}; check that it is plugged in, or pick "
                                 "another index, a video file or an image folder")
            raise UsageError(f"cannot open video source {self.target!r}; check the path or URL and the codec")
        return cap

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        index, failures = 0, 0
        while True:
            ok, frame = self.cap.read()
            if not ok:
                if not self.live:
                    return
                failures += 1
                if failures > self.retries:
                    raise UsageError(f"stream {self.target!r} dropped and did not come back after "
                                     f"{self.retries} reconnects; check the camera or network")
                time.sleep(self.backoff * 2 ** (failures - 1))
                self.cap.release()
                try:
                    self.cap = self._open()
                except UsageError:
                    pass
                continue
            failures = 0
            if index % self.vid_stride == 0:
                yield f"frame_{index:06d}", cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            index += 1

    def close(self) -> None:
        self.cap.release()


class SimCamera(Source):
    """The simulated camera on a moving arm (sim.feed.SimFeed): an endless sweep over the bed."""

    live = True
    is_video = True

    def __init__(self, size: int = 256, seed: int = 0, vid_stride: int = 1) -> None:
        module, cls = SIM_FEED.split(":")
        self.feed = getattr(importlib.import_module(module), cls)(size=size, seed=seed)
        self.vid_stride = vid_stride
        self.fps = 30.0

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        for index, frame in enumerate(self.feed):
            if index % self.vid_stride == 0:
                yield f"frame_{index:06d}", frame

    def close(self) -> None:
        self.feed.close()


def open_source(spec: str, vid_stride: int = 1, sim_size: int = 256, seed: int = 0) -> Source:
    """Open ``spec``: a webcam index ("0"), a video or image file, a folder, a glob, a URL, or "sim"."""
    if vid_stride < 1:
        raise UsageError(f"--vid-stride must be at least 1, got {vid_stride}")
    if spec == "sim":
        return SimCamera(size=sim_size, seed=seed, vid_stride=vid_stride)
    if spec.isdigit():
        return VideoCapture(int(spec), vid_stride)
    if spec.startswith(STREAM_PREFIXES):
        return VideoCapture(spec, vid_stride)
    path = Path(spec)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file())
        images = [p for p in files if p.suffix.lower() in IMAGE_EXTS]
        for p in files:
            if p.suffix.lower() not in IMAGE_EXTS:
                warnings.warn(f"skipping {p}: not an image file", stacklevel=2)
        if not images:
            raise UsageError(f"folder {spec!r} holds no images ({', '.join(sorted(IMAGE_EXTS))})")
        return ImageFiles(images[::vid_stride])
    if any(c in spec for c in "*?["):
        matches = sorted(Path(p) for p in globlib.glob(spec) if Path(p).suffix.lower() in IMAGE_EXTS)
        if not matches:
            raise UsageError(f"no images match {spec!r}; check the pattern (quote it in the shell)")
        return ImageFiles(matches[::vid_stride])
    if path.is_file():
        if path.suffix.lower() in IMAGE_EXTS:
            read_image(path)  # fail now, not mid-run
            return ImageFiles([path])
        return VideoCapture(str(path), vid_stride)
    raise UsageError(f"source {spec!r} is not a webcam index, file, folder, glob, URL or 'sim'; check the path")
