"""``OnnxSegmenter``: the ONNX twin of ``vision.predictor.FewShotSegmenter`` over a ``models.runtime.Runtime``.

Both are ``models.pipeline.SegmentationPipeline`` (set_support once, predict per frame, the same preprocessing,
colour prior, CRF gate, scales and multi-class decision) over their own backend, so the two agree pixel for pixel
up to float rounding. ``OnnxBackend`` is the backend here: the bundle's ``guide``, ``segment`` (softmax applied)
and ``crf`` models. numpy and OpenCV only (no torch).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.colour_prior import DEFAULT_COLOUR_PRIOR
from models.cue_fusion import DEFAULT_FUSION
from models.pipeline import SegmentationPipeline
from models.runtime import BundleError, Runtime, softmax_fg
from models.scales import DEFAULT_SCALES, input_sides

__all__ = ["OnnxSegmenter", "OnnxBackend"]


class OnnxBackend:
    """``models.pipeline.SegmentBackend`` over a ``Runtime``: ``guide`` -> [1,G], ``segment`` -> softmax [1,2,s,s],
    ``crf`` -> ``crf.onnx``'s refined [1,L,H,W] with crf "meanfield" (None with "none"). ``crf_max_labels``: the
    labels ``crf.onnx`` was exported for (its ``probs`` input's channel count; 2 in bundles of ``microfarm export``),
    0 without a CRF."""

    def __init__(self, rt: Runtime, crf: str = "none") -> None:
        self.rt, self.crf_name = rt, crf
        self.crf_max_labels = 0
        if crf == "meanfield" and rt.has("crf"):
            shape = next((i["shape"] for i in rt.entry("crf")["inputs"] if i["name"] == "probs"), [1, 2])
            self.crf_max_labels = shape[1] if isinstance(shape[1], int) and shape[1] > 0 else 1 << 16

    def guide(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """image [1,3,s,s] float32 RGB 0..1, mask [1,1,s,s] float32 0..1 -> guide [1,G] float32."""
        return self.rt.guide(image, mask)

    def segment(self, query: np.ndarray, guide: np.ndarray) -> np.ndarray:
        """query [1,3,s,s] float32 RGB 0..1, guide [1,G] -> softmax probabilities [1,2,s,s] float32."""
        return softmax_fg(self.rt.segment(query, guide))

    def crf(self, probs: np.ndarray, image: np.ndarray) -> np.ndarray | None:
        """probs [1,L,H,W] float32, image [1,3,H,W] float32 RGB 0..255 -> refined [1,L,H,W] (None: no CRF)."""
        return self.rt.crf(probs, image) if self.crf_max_labels else None


class OnnxSegmenter(SegmentationPipeline):
    """``set_support(images, masks, classes=None)`` once, ``predict(frame) -> (probs, mask)`` (``models.pipeline``).

    Same preprocessing as the torch ``FewShotSegmenter``: the network sees ``imgsz x imgsz`` and the other sides of
    ``scales`` (cv2 INTER_AREA when shrinking, INTER_LINEAR otherwise); probabilities are resized back to the
    frame's size and blended with the support's colour histogram (``colour_prior`` W: (1-W) network + W colour,
    ``models.colour_prior``); crf "meanfield" runs ``crf.onnx`` at the frame's size, for supports where the gate
    allows (``crf_gate``, ``models.crf_gate``); a bundle's ``crf.onnx`` takes 2 labels, so a support of several
    classes runs without it (``crf_supported`` False). The guide is a running mean over the shots. ``scales``: run
    the network at ``round(imgsz * r)`` for each ratio r (a guide per side) and average its probabilities.
    ``fusion``: "blend" (the weight W) or "fit" (cue weights fitted on the support, ``models.cue_fusion``).
    """

    def __init__(self, runtime: Runtime | str | Path, crf: str = "none", imgsz: int | None = None,
                 threshold: float = 0.5, colour_prior: float | None = None, crf_gate: bool = True,
                 scales: Sequence[float] = DEFAULT_SCALES, fusion: str = DEFAULT_FUSION,
                 **runtime_kwargs: Any) -> None:
        if crf not in ("none", "meanfield"):
            raise BundleError(f"crf {crf!r} is not available from a bundle; choose none or meanfield (crf.onnx)")
        w = DEFAULT_COLOUR_PRIOR if colour_prior is None else float(colour_prior)
        if not 0.0 <= w <= 1.0:
            raise BundleError(f"colour_prior must be in [0, 1] (0 = the network alone), got {colour_prior}")
        self.rt = runtime if isinstance(runtime, Runtime) else Runtime(runtime, **runtime_kwargs)
        if crf == "meanfield" and not self.rt.has("crf"):
            raise BundleError(f"the bundle {str(self.rt.folder)!r} has no crf model (exported with --no-crf); use "
                              "--crf none or re-export it without --no-crf")
        pre = self.rt.entry("segment").get("preprocess", {}) if self.rt.has("segment") else {}
        size = int(imgsz or pre.get("size", 256))
        sides = input_sides(size, scales, BundleError)
        shape = next((i["shape"] for i in self.rt.entry("segment")["inputs"] if i["name"] == "query"), None) \
            if self.rt.has("segment") else None
        if shape is not None and isinstance(shape[-1], int) and shape[-1] > 0 and any(s != shape[-1] for s in sides):
            raise BundleError(f"the bundle's segment model takes {shape[-1]}x{shape[-1]} inputs only (exported with "
                              f"--fixed-shape); use --imgsz {shape[-1]} --scales 1, or re-export without --fixed-shape")
        super().__init__(OnnxBackend(self.rt, crf), crf, size, sides, threshold, w, crf_gate, BundleError,
                         BundleError, fusion)
