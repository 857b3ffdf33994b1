"""Few-shot segmentation metrics with the PASCAL-5i definitions (numpy only).

- class-wise mIoU: for each class c, intersection and union of the *foreground* summed over all episodes of
  class c, IoU_c = I_c / U_c; mIoU = mean over classes.
- FB-IoU: foreground and background IoU, each with intersection and union summed over all episodes;
  FB-IoU = their mean.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

__all__ = ["SegmentationMetrics", "AbsentMetrics", "binary_iou"]


def binary_iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """Foreground IoU of two boolean-like (H,W) masks; 1.0 when both are empty."""
    p, t = np.asarray(pred).astype(bool), np.asarray(truth).astype(bool)
    union = int(np.count_nonzero(p | t))
    return 1.0 if union == 0 else int(np.count_nonzero(p & t)) / union


class SegmentationMetrics:
    """Accumulates ``update(pred (H,W) bool/0-255, truth (H,W) bool/0-255, class_id)`` over episodes."""

    def __init__(self) -> None:
        self.inter: dict[int, int] = defaultdict(int)
        self.union: dict[int, int] = defaultdict(int)
        self.episodes: dict[int, int] = defaultdict(int)
        self.fb_inter = np.zeros(2, np.int64)  # background, foreground
        self.fb_union = np.zeros(2, np.int64)

    def update(self, pred: np.ndarray, truth: np.ndarray, class_id: int) -> None:
        p, t = np.asarray(pred).astype(bool), np.asarray(truth).astype(bool)
        if p.shape != t.shape:
            raise ValueError(f"prediction {p.shape} and truth {t.shape} differ in shape")
        i_fg, u_fg = int(np.count_nonzero(p & t)), int(np.count_nonzero(p | t))
        i_bg, u_bg = int(np.count_nonzero(~p & ~t)), int(np.count_nonzero(~p | ~t))
        c = int(class_id)
        self.inter[c] += i_fg
        self.union[c] += u_fg
        self.episodes[c] += 1
        self.fb_inter += (i_bg, i_fg)
        self.fb_union += (u_bg, u_fg)

    def class_iou(self) -> dict[int, float]:
        """IoU per class id (a class whose union is empty counts as 1.0)."""
        return {c: (self.inter[c] / self.union[c] if self.union[c] else 1.0) for c in sorted(self.episodes)}

    def miou(self) -> float:
        ious = self.class_iou()
        return float(np.mean(list(ious.values()))) if ious else float("nan")

    def fb_iou(self) -> float:
        if not self.fb_union.any():
            return float("nan")
        ious = np.where(self.fb_union > 0, self.fb_inter / np.maximum(self.fb_union, 1), 1.0)
        return float(ious.mean())

    def summary(self) -> dict[str, object]:
        """``{"miou", "fb_iou", "episodes", "class_iou": {id: iou}}`` (floats in [0, 1])."""
        return {"miou": self.miou(), "fb_iou": self.fb_iou(), "episodes": int(sum(self.episodes.values())),
                "class_iou": {str(c): v for c, v in self.class_iou().items()}}


class AbsentMetrics:
    """Queries that hold none of the class asked for (the answer is "nothing here"): how much of each frame a
    method marks. ``update(pred (H,W) bool, class_id)``; ``summary(present)`` -> ``absent_frames``,
    ``absent_marked`` (mean fraction of the frame marked, 0..1), ``absent_alarm`` (fraction of frames with more
    than ``alarm_fraction`` of their pixels marked) and, given the same episodes' ``SegmentationMetrics``,
    ``feed_miou``: the class-wise mIoU when every absent frame's marked pixels count as false positives of its
    class too (I_c / (U_c + marked_c)), i.e. the mIoU of a feed where half the frames hold the class."""

    def __init__(self, alarm_fraction: float = 0.01) -> None:
        self.alarm_fraction = float(alarm_fraction)
        self.fractions: list[float] = []
        self.marked: dict[int, int] = defaultdict(int)

    def update(self, pred: np.ndarray, class_id: int) -> None:
        p = np.asarray(pred, bool)
        self.fractions.append(float(p.mean()))
        self.marked[int(class_id)] += int(np.count_nonzero(p))

    def feed_miou(self, present: SegmentationMetrics) -> float:
        """mIoU over ``present``'s classes with this object's marked pixels added to each class's union."""
        ious = [present.inter[c] / u if (u := present.union[c] + self.marked[c]) else 1.0
                for c in sorted(present.episodes)]
        return float(np.mean(ious)) if ious else float("nan")

    def summary(self, present: SegmentationMetrics | None = None) -> dict[str, float | int]:
        f = np.asarray(self.fractions, np.float64)
        if not f.size:
            return {"absent_frames": 0}
        out: dict[str, float | int] = {"absent_frames": int(f.size), "absent_marked": float(f.mean()),
                                       "absent_alarm": float((f > self.alarm_fraction).mean())}
        if present is not None:
            out["feed_miou"] = self.feed_miou(present)
        return out
