"""``OnnxSegmenter``: the ONNX twin of ``vision.predictor.FewShotSegmenter`` over a ``models.runtime.Runtime``.

``set_support`` once, ``predict`` per frame, the same preprocessing, colour prior and CRF gate, so the two agree
pixel for pixel up to float rounding. numpy and OpenCV only (no torch).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.imageio import support_shot, to_rgb8
from models.runtime import BundleError, Runtime, softmax_fg
from models.scales import DEFAULT_SCALES, input_sides

__all__ = ["OnnxSegmenter"]


class OnnxSegmenter:
    """``set_support(images, masks)`` once, ``predict(frame) -> (probs (H,W) float32, mask (H,W) uint8 0/255)``.

    Same preprocessing as the torch ``FewShotSegmenter``: the network sees ``imgsz x imgsz`` and the other sides of
    ``scales`` (cv2 INTER_AREA when
    shrinking, INTER_LINEAR otherwise); probabilities are resized back to the frame's size and blended with the
    support's colour histogram (``colour_prior`` W: (1-W) network + W colour, ``models.colour_prior``); crf
    "meanfield" runs ``crf.onnx`` at the frame's size, for supports where the gate allows (``crf_gate``,
    ``models.crf_gate``). The guide is a running mean over the shots. ``scales``: run the network at
    ``round(imgsz * r)`` for each ratio r (a guide per side) and average its probabilities (``models.scales``).
    """

    def __init__(self, runtime: Runtime | str | Path, crf: str = "none", imgsz: int | None = None,
                 threshold: float = 0.5, colour_prior: float | None = None, crf_gate: bool = True,
                 scales: Sequence[float] = DEFAULT_SCALES, **runtime_kwargs: Any) -> None:
        from models.colour_prior import DEFAULT_COLOUR_PRIOR, ColourHistogram
        from models.crf_gate import CRFGate

        if crf not in ("none", "meanfield"):
            raise BundleError(f"crf {crf!r} is not available from a bundle; choose none or meanfield (crf.onnx)")
        w = DEFAULT_COLOUR_PRIOR if colour_prior is None else float(colour_prior)
        if not 0.0 <= w <= 1.0:
            raise BundleError(f"colour_prior must be in [0, 1] (0 = the network alone), got {colour_prior}")
        self.colour_prior = w
        self._colour = ColourHistogram()
        self.rt = runtime if isinstance(runtime, Runtime) else Runtime(runtime, **runtime_kwargs)
        if crf == "meanfield" and not self.rt.has("crf"):
            raise BundleError(f"the bundle {str(self.rt.folder)!r} has no crf model (exported with --no-crf); use "
                              "--crf none or re-export it without --no-crf")
        pre = self.rt.entry("segment").get("preprocess", {}) if self.rt.has("segment") else {}
        self.imgsz = int(imgsz or pre.get("size", 256))
        self.sides = input_sides(self.imgsz, scales, BundleError)
        shape = next((i["shape"] for i in self.rt.entry("segment")["inputs"] if i["name"] == "query"), None) \
            if self.rt.has("segment") else None
        if shape is not None and isinstance(shape[-1], int) and shape[-1] > 0 and any(s != shape[-1]
                                                                                      for s in self.sides):
            raise BundleError(f"the bundle's segment model takes {shape[-1]}x{shape[-1]} inputs only (exported with "
                              f"--fixed-shape); use --imgsz {shape[-1]} --scales 1, or re-export without --fixed-shape")
        self.crf, self.threshold = crf, float(threshold)
        self._sums: dict[int, np.ndarray] = {}
        self._count = 0
        self.gate = CRFGate(crf_gate)

    @property
    def shots(self) -> int:
        return self._count

    def _input(self, rgb: np.ndarray, s: int) -> np.ndarray:
        """(H,W,3) uint8 RGB -> [1,3,s,s] float32 in [0,1]."""
        import cv2

        interp = cv2.INTER_AREA if min(rgb.shape[:2]) > s else cv2.INTER_LINEAR
        x = cv2.resize(rgb, (s, s), interpolation=interp)
        return (x.transpose(2, 0, 1)[None].astype(np.float32) / np.float32(255.0))

    def set_support(self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> None:
        if len(images) != len(masks) or not images:
            raise BundleError(f"need as many masks as images, at least one (got {len(images)} images, "
                              f"{len(masks)} masks)")
        self._sums, self._count = {}, 0
        self._colour.reset()
        self.gate.reset()
        for img, m in zip(images, masks, strict=True):
            self.add_support(img, m)

    def add_support(self, image: np.ndarray, mask: np.ndarray) -> None:
        import cv2

        rgb, m = support_shot(image, mask, BundleError)
        guides = {}  # every side's guide first, so that a failure leaves the support as it was
        for s in self.sides:
            mt = cv2.resize(m.astype(np.float32), (s, s), interpolation=cv2.INTER_AREA)[None, None]
            guides[s] = self.rt.guide(self._input(rgb, s), mt)
        for s, g in guides.items():
            self._sums[s] = g + self._sums[s] if s in self._sums else g
        self._count += 1
        self._colour.add(rgb, m)
        self.gate.add(rgb, m)

    def guide_value(self, side: int | None = None) -> np.ndarray:
        """The support's guide [1,G] float32 at input side ``side`` (default: ``imgsz``'s, the first)."""
        if not self._count:
            raise BundleError("no support shots yet: call set_support first")
        if side is not None and side not in self.sides:
            raise BundleError(f"no guide at input side {side}; this segmenter runs at {list(self.sides)}")
        return (self._sums[side or self.sides[0]] / self._count).astype(np.float32)

    def fused(self, rgb: np.ndarray) -> np.ndarray:
        """(H,W,3) uint8 RGB -> (H,W) float32 foreground probability before the CRF (network + colour prior)."""
        import cv2

        from models.colour_prior import blend

        h, w = rgb.shape[:2]
        fg = np.zeros((h, w), np.float32)
        for s in self.sides:
            p = softmax_fg(self.rt.segment(self._input(rgb, s), self.guide_value(s)))
            fg += cv2.resize(p[0, 1], (w, h), interpolation=cv2.INTER_LINEAR)
        fg /= np.float32(len(self.sides))
        if self.colour_prior > 0:
            fg = blend(fg, self._colour.prob(rgb), self.colour_prior)
        return np.clip(fg, 0.0, 1.0)

    def refine(self, fg: np.ndarray, rgb: np.ndarray) -> np.ndarray:
        """``crf.onnx`` on fg (H,W) float32 and its frame (H,W,3) uint8 RGB -> (H,W) float32 (crf "meanfield")."""
        if self.crf != "meanfield":
            return fg
        img = rgb.transpose(2, 0, 1)[None].astype(np.float32)
        return self.rt.crf(np.stack([1.0 - fg, fg])[None], img)[0, 1]

    @property
    def crf_on(self) -> bool:
        """Whether ``predict`` runs the CRF for the current support (runs the gate's check if not yet done)."""
        return self.crf != "none" and self.gate.use_crf(self.fused, self.refine, self.threshold)

    def predict(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rgb = to_rgb8(frame, BundleError)
        fg = self.fused(rgb)
        if self.crf_on:
            fg = self.refine(fg, rgb)
        fg = np.clip(fg, 0.0, 1.0).astype(np.float32)
        return fg, np.where(fg >= self.threshold, 255, 0).astype(np.uint8)
