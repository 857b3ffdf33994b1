"""Training augmentation of (image, mask) pairs: geometry on both, a sim-to-real photometric pipeline on
the image. Used by ``microfarm train-segmenter`` (geometry and camera degradations per frame; the colour
transform per episode or per frame, ``--colour``) and by ``EpisodeSampler(augment=True)`` (mode "light")."""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

__all__ = ["strong_augment", "colour_shift", "resize_pair"]


def resize_pair(image: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize to (size, size): area interpolation for the image, nearest for the mask."""
    if image.shape[:2] == (size, size):
        return image, mask
    return (cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA),
            cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST))


def _affine(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, size: int,
            zoom: tuple[float, float], rotate: bool) -> tuple[np.ndarray, np.ndarray]:
    """Random zoom (output px per input px, log-uniform, relative to fitting the frame at ``size``),
    rotation, flips and a crop centred near the foreground; image bilinear, mask nearest."""
    h, w = mask.shape
    fit = size / min(h, w)
    scale = fit * math.exp(rng.uniform(math.log(zoom[0]), math.log(zoom[1])))
    angle = float(rng.uniform(-180, 180)) if rotate else 0.0
    ys, xs = np.nonzero(mask == 1)
    if len(ys) and rng.random() < 0.8:  # centre on a foreground pixel, jittered
        j = int(rng.integers(len(ys)))
        half = size / scale / 2
        cx = float(np.clip(xs[j] + rng.uniform(-0.6, 0.6) * half, 0, w - 1))
        cy = float(np.clip(ys[j] + rng.uniform(-0.6, 0.6) * half, 0, h - 1))
    else:
        cx, cy = rng.uniform(0.25, 0.75) * w, rng.uniform(0.25, 0.75) * h
    m = cv2.getRotationMatrix2D((cx, cy), angle, scale)
    m[:, 2] += (size / 2 - cx, size / 2 - cy)
    img = cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    msk = cv2.warpAffine(mask, m, (size, size), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT_101)
    if rng.random() < 0.5:
        img, msk = img[:, ::-1], msk[:, ::-1]
    if rng.random() < 0.5:
        img, msk = img[::-1], msk[::-1]
    return np.ascontiguousarray(img), np.ascontiguousarray(msk)


def colour_shift(rng: np.random.Generator, strong: bool = True) -> dict[str, Any]:
    """Draw one global colour transform (hue, saturation, gamma, contrast, brightness, white balance, grayscale).

    Drawn once per frame by default; with ``TrainConfig.colour == "episode"`` once per episode and applied to all
    its frames (a real feed keeps one camera and one light between the support and the query)."""
    hue = 12 if strong else 6
    p: dict[str, Any] = {"hue": rng.uniform(-hue, hue),
                         "sat": rng.uniform(0.5, 1.5) if strong else rng.uniform(0.8, 1.2)}
    if strong:
        p.update(gamma=math.exp(rng.uniform(-0.4, 0.4)), contrast=rng.uniform(0.6, 1.4),
                 bright=rng.uniform(0.6, 1.4), balance=rng.uniform(0.8, 1.2, size=3).astype(np.float32),
                 gray=bool(rng.random() < 0.1))
    else:
        p.update(gamma=1.0, contrast=rng.uniform(0.85, 1.15), bright=rng.uniform(0.85, 1.15),
                 balance=np.ones(3, np.float32), gray=False)
    return p


# the small per-frame colour jitter on top of an episode's shared colour transform
FRAME_JITTER = {"hue": 3.0, "sat": 0.1, "contrast": 0.1, "bright": 0.1, "balance": 0.05}


def _jitter(rng: np.random.Generator, base: dict[str, Any]) -> dict[str, Any]:
    j = FRAME_JITTER
    p = dict(base)
    p["hue"] = base["hue"] + rng.uniform(-j["hue"], j["hue"])
    for k in ("sat", "contrast", "bright"):
        p[k] = base[k] * rng.uniform(1 - j[k], 1 + j[k])
    p["balance"] = base["balance"] * rng.uniform(1 - j["balance"], 1 + j["balance"], size=3).astype(np.float32)
    return p


def _apply_colour(img: np.ndarray, p: dict[str, Any]) -> np.ndarray:
    """(S,S,3) uint8 RGB -> (S,S,3) float32 in ~0..1 after the colour transform ``p`` (``colour_shift``)."""
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + p["hue"]) % 180
    hsv[..., 1] *= p["sat"]
    x = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32) / 255.0
    if p["gamma"] != 1.0:
        x = x ** p["gamma"]
    mean = x.mean()
    x = (x - mean) * p["contrast"] + mean * p["bright"]
    x = x * p["balance"]
    if p["gray"]:
        x = np.repeat(x @ np.array([0.299, 0.587, 0.114], np.float32), 3).reshape(x.shape)
    return x


def _photometric(img: np.ndarray, rng: np.random.Generator, strong: bool,
                 colour: dict[str, Any] | None = None) -> np.ndarray:
    """Colour and camera degradations of an (S,S,3) uint8 RGB image (the sim-to-real part). ``colour``: an
    episode's shared transform (``colour_shift``), jittered a little per frame; None: one drawn for this frame."""
    x = _apply_colour(img, colour_shift(rng, strong) if colour is None else _jitter(rng, colour))
    if not strong:
        return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)
    s = x.shape[0]
    if rng.random() < 0.3:  # uneven light: a linear gradient or a vignette
        yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s - 0.5
        if rng.random() < 0.5:
            a = rng.uniform(0, 2 * math.pi)
            g = 1 + rng.uniform(0.2, 0.6) * (np.cos(a) * xx + np.sin(a) * yy)
        else:
            g = 1 - rng.uniform(0.2, 0.6) * (xx * xx + yy * yy) * 2
        x = x * g[..., None]
    r = rng.random()
    if r < 0.25:
        x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.4, 1.6))
    elif r < 0.35:  # motion blur
        k = int(rng.integers(3, 8))
        ker = np.zeros((k, k), np.float32)
        ker[k // 2] = 1.0 / k
        ker = cv2.warpAffine(ker, cv2.getRotationMatrix2D((k / 2 - 0.5, k / 2 - 0.5), rng.uniform(0, 180), 1), (k, k))
        x = cv2.filter2D(x, -1, ker / max(ker.sum(), 1e-6))
    elif r < 0.5:  # low resolution
        f = rng.uniform(0.35, 0.8)
        lo = max(8, int(s * f))
        x = cv2.resize(cv2.resize(x, (lo, lo), interpolation=cv2.INTER_AREA), (s, s), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.5:
        x = x + rng.normal(0, rng.uniform(0.005, 0.05), x.shape).astype(np.float32)
    out = (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)
    if rng.random() < 0.4:
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(15, 90))])
        if ok:
            out = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    return out


def strong_augment(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, size: int,
                   mode: str = "strong", need_fg: bool = False,
                   colour: dict[str, Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Augment one frame for training -> ((size,size,3) uint8 RGB, (size,size) uint8 {0,1}).

    mode "strong": zoom 0.5-2.5x around fitting the frame, any rotation, flips, a crop near the foreground;
    then hue +-24 deg, saturation 0.5-1.5, gamma, contrast, brightness, white balance, uneven light, random
    grayscale, Gaussian/motion blur or low resolution, sensor noise, JPEG (quality 15-90).
    "light": zoom 0.75-1.5, right-angle rotations, flips, mild colour. "none": resize only.
    ``colour``: an episode's shared colour transform (``colour_shift``) instead of one drawn for this frame.
    ``need_fg``: retry the geometry (3 times, then fall back to the whole frame) so the mask keeps foreground.
    The mask may hold 2 (ignore) besides 0 and 1; it is warped with nearest neighbour like the rest.
    """
    if mode == "none":
        return resize_pair(image, mask, size)
    strong = mode == "strong"
    zoom = (0.5, 2.5) if strong else (0.75, 1.5)
    for _ in range(3):
        img, msk = _affine(image, mask, rng, size, zoom, rotate=strong)
        if not need_fg or (msk == 1).any():
            break
    else:
        img, msk = resize_pair(image, mask, size)
    if not strong:
        k = int(rng.integers(4))
        img, msk = np.ascontiguousarray(np.rot90(img, k)), np.ascontiguousarray(np.rot90(msk, k))
    return _photometric(img, rng, strong, colour), msk
