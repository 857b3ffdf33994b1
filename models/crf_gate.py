"""The CRF gate: run the CRF for a support set only if it does not hurt the support's own masks (numpy only).

A CRF snaps masks to colour edges; that helps broad leaves and erases thin ones (onion leaves, chickweed
leaflets: across the four held-out folds it cost up to 7 mIoU points there while adding 1-5 on broad-leaved
species, README "All four folds"). The support shows which case we are in: the annotated examples are frames
of the very thing to segment. So once per support set the predictor segments each support image with the
support's own guide and colour prior, with and without the CRF, and keeps the CRF only if the mean IoU
against the given masks does not fall (``gain >= 0``). The check costs K extra predictions and CRF runs when
the support changes, nothing per frame. Used by the one segmentation pipeline (``models.pipeline``) under
``vision.FewShotSegmenter`` and ``models.onnx_segmenter.OnnxSegmenter``. A multi-class support (``models.labels``)
is judged on the mean IoU over the classes each support mask shows.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from models.labels import decide

__all__ = ["CRFGate", "support_crf_gain", "keeps_crf"]

Fused = Callable[[np.ndarray], np.ndarray]  # (H,W,3) uint8 RGB -> (H,W) P(fg) or (K,H,W) class probs, float32
Refine = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (probs as fused gives them, rgb) -> the same after the CRF


def _iou(pred: np.ndarray, truth: np.ndarray) -> float:
    union = np.count_nonzero(pred | truth)
    return 1.0 if union == 0 else np.count_nonzero(pred & truth) / union


def _shot_iou(probs: np.ndarray, truth: np.ndarray, threshold: float) -> float:
    """Foreground IoU of (H,W) probs vs a bool mask; for (K,H,W) class probs vs (H,W) labels, the mean IoU over
    the classes present in ``truth`` (``models.labels.decide``)."""
    if probs.ndim == 2:
        return _iou(probs >= threshold, truth != 0)
    pred = decide(probs, threshold)
    classes = [int(k) for k in np.unique(truth) if k != 0]
    return float(np.mean([_iou(pred == k, truth == k) for k in classes])) if classes else 1.0


def support_crf_gain(shots: list[tuple[np.ndarray, np.ndarray]], fused: Fused, refine: Refine,
                     threshold: float = 0.5) -> tuple[float, float]:
    """Mean foreground IoU over the support shots without and with the CRF: ``(iou_without, iou_with)``.

    shots: (image (H,W,3) uint8 RGB, mask (H,W) bool, or uint8 labels 0..K for a multi-class support) pairs;
    fused/refine: the predictor's probabilities before the CRF ((H,W) foreground, or (K,H,W) class probabilities)
    and the CRF itself; a pixel is foreground at probability >= ``threshold``.
    """
    without, with_crf = [], []
    for rgb, mask in shots:
        fg = fused(rgb)
        without.append(_shot_iou(fg, mask, threshold))
        with_crf.append(_shot_iou(refine(fg, rgb), mask, threshold))
    return float(np.mean(without)), float(np.mean(with_crf))


def keeps_crf(iou_without: float, iou_with: float) -> bool:
    """The gate's rule: keep the CRF unless it lowers the support's mean IoU."""
    return iou_with >= iou_without


class CRFGate:
    """Keeps the support shots and decides, once per support set, whether the CRF runs.

    ``reset()`` / ``add(rgb, mask)`` follow the predictor's support; ``use_crf(fused, refine, threshold)``
    computes the check on the first call after a change (or with another threshold) and returns the cached
    answer afterwards. ``enabled=False``: always run the CRF (no shots kept). ``last`` holds the check's
    ``(iou_without, iou_with)`` (None before one ran).
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = bool(enabled)
        self.reset()

    def reset(self) -> None:
        self.shots: list[tuple[np.ndarray, np.ndarray]] = []
        self.last: tuple[float, float] | None = None
        self._threshold: float | None = None

    def add(self, rgb: np.ndarray, mask: np.ndarray, labelled: bool = False) -> None:
        """One support shot: (H,W,3) uint8 RGB and its (H,W) mask, non-zero = foreground (``labelled``: uint8
        labels 0..K of a multi-class support)."""
        self.last = None
        if not self.enabled:
            return
        m = np.array(mask, np.uint8) if labelled else np.asarray(mask) != 0
        self.shots.append((np.array(rgb, np.uint8), m))  # copies: callers reuse frame buffers

    def use_crf(self, fused: Fused, refine: Refine, threshold: float = 0.5) -> bool:
        """Whether the CRF runs for the current support; RuntimeError before any shot."""
        if not self.enabled:
            return True
        if not self.shots:
            raise RuntimeError("no support shots yet: call set_support/add_support first")
        if self.last is None or self._threshold != threshold:
            self.last = support_crf_gain(self.shots, fused, refine, threshold)
            self._threshold = threshold
        return keeps_crf(*self.last)

    def report(self) -> dict[str, object]:
        """The check for ``summary.json``: enabled, IoUs without/with the CRF on the support, the decision."""
        if not self.enabled or self.last is None:
            return {"enabled": self.enabled}
        return {"enabled": True, "support_iou_without_crf": round(self.last[0], 4),
                "support_iou_with_crf": round(self.last[1], 4), "crf_on": keeps_crf(*self.last)}
