"""Two classic baselines for the few-shot segmentation table (numpy + OpenCV only).

- ``exg_otsu(image)``: excess green ExG = 2g - r - b on chromatic coordinates (r = R / (R+G+B), ...),
  thresholded with Otsu's method (Woebbecke et al. 1995; the classic plant/soil segmenter). It ignores the
  support: it finds "green", every plant, not the one species asked for.
- ``HistogramBackprojection``: colour-histogram back-projection from the support. Hue-saturation-value
  histograms of the support's foreground and background pixels give, per colour, the posterior
  P(fg | colour) = pi Hf / (pi Hf + (1 - pi) Hb) (pi: the support's foreground fraction); the map is
  smoothed a little and thresholded at 0.5.

Both take (H,W,3) uint8 RGB and return (H,W) bool masks.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

__all__ = ["excess_green", "exg_otsu", "HistogramBackprojection"]


def excess_green(image: np.ndarray) -> np.ndarray:
    """ExG = 2g - r - b of (H,W,3) uint8 RGB on chromatic coordinates -> (H,W) float32 in [-1, 2]."""
    x = np.asarray(image, np.float32)
    s = x.sum(2) + 1e-6
    r, g, b = x[..., 0] / s, x[..., 1] / s, x[..., 2] / s
    exg = 2 * g - r - b
    return np.where(x.sum(2) < 3, 0.0, exg).astype(np.float32)  # black pixels have no chromaticity


def exg_otsu(image: np.ndarray) -> np.ndarray:
    """Plant (green) mask of (H,W,3) uint8 RGB: ExG thresholded with Otsu -> (H,W) bool.

    An image with (almost) one ExG value has no two classes: everything is background.
    """
    exg = excess_green(image)
    lo, hi = float(exg.min()), float(exg.max())
    if hi - lo < 1e-3:
        return np.zeros(exg.shape, bool)
    u8 = np.round((exg - lo) / (hi - lo) * 255).astype(np.uint8)
    t, _ = cv2.threshold(u8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return u8 > t


class HistogramBackprojection:
    """Colour-histogram back-projection from a support set.

    ``fit(images, masks)`` (lists of (H,W,3) uint8 RGB and (H,W) non-zero = fg), then ``prob(query)`` ->
    (H,W) float32 P(fg) and ``predict(query)`` -> (H,W) bool. ``bins`` = (hue, saturation, value).
    """

    def __init__(self, bins: tuple[int, int, int] = (30, 16, 8), smooth: float = 1.0, prior_floor: float = 0.05):
        self.bins = tuple(int(b) for b in bins)
        self.smooth, self.prior_floor = float(smooth), float(prior_floor)
        self.post: np.ndarray | None = None

    def _codes(self, image: np.ndarray) -> np.ndarray:
        hsv = cv2.cvtColor(np.ascontiguousarray(image, np.uint8), cv2.COLOR_RGB2HSV).astype(np.int32)
        bh, bs, bv = self.bins
        h = np.minimum(hsv[..., 0] * bh // 180, bh - 1)
        s = np.minimum(hsv[..., 1] * bs // 256, bs - 1)
        v = np.minimum(hsv[..., 2] * bv // 256, bv - 1)
        return (h * bs + s) * bv + v

    def fit(self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> HistogramBackprojection:
        n = int(np.prod(self.bins))
        hf, hb = np.zeros(n), np.zeros(n)
        for img, m in zip(images, masks, strict=True):
            c = self._codes(img).ravel()
            fg = np.asarray(m).ravel() != 0
            hf += np.bincount(c[fg], minlength=n)
            hb += np.bincount(c[~fg], minlength=n)
        nf, nb = hf.sum(), hb.sum()
        if nf == 0:
            raise ValueError("the support has no foreground pixels")
        pi = float(np.clip(nf / max(nf + nb, 1), self.prior_floor, 1 - self.prior_floor))
        df, db = (hf + 0.1) / (nf + 0.1 * n), (hb + 0.1) / (max(nb, 1) + 0.1 * n)
        self.post = (pi * df / (pi * df + (1 - pi) * db)).astype(np.float32)
        return self

    def prob(self, image: np.ndarray) -> np.ndarray:
        if self.post is None:
            raise RuntimeError("call fit(images, masks) first")
        p = self.post[self._codes(image)]
        if self.smooth > 0:
            p = cv2.GaussianBlur(p, (0, 0), self.smooth)
        return p.astype(np.float32)

    def predict(self, image: np.ndarray) -> np.ndarray:
        return self.prob(image) >= 0.5
